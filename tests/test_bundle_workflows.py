"""The Inf-Net bundle's configs are MONAI workflows: check_properties() finds every required property for the
inference, evaluation and training workflow types, built from covseg's own pieces."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from utils import BUNDLES, INFNET_BUNDLE, monai_bundle_run

from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

CONFIGS = INFNET_BUNDLE / "configs"
SEMI = BUNDLES / "semi_infnet"


def _workflow(name: str, workflow_type: str, bundle: Path = INFNET_BUNDLE, **overrides):
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(bundle / "configs" / f"{name}.yaml"), workflow_type=workflow_type,
                              logging_file=False, bundle_root=str(bundle), **overrides)
    workflow.initialize()
    return workflow


def _assert_complete(workflow) -> None:
    logging.getLogger("monai").setLevel(logging.ERROR)
    assert workflow.check_properties() == []  # not None: a workflow type was given, so MONAI really checked


def test_inference_config_is_a_monai_infer_workflow(tmp_path):
    from covseg.engines.inference.dataset import VolumeDataset, VolumePreprocessing
    from covseg.engines.inference.evaluator import VolumeBatchInference
    from covseg.engines.inference.predictor import SlicePredictor
    from covseg.engines.inference.volume import InfectionPostprocessing

    ct = write_phantom(tmp_path / "in" / "p.nii.gz", make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0),
                                                                         seed=1))["ct"]
    workflow = _workflow("inference", "infer", dataset_dir=str(ct), output_dir=str(tmp_path / "out"))
    _assert_complete(workflow)
    assert isinstance(workflow.dataset, VolumeDataset) and [s.name for s in workflow.dataset.data] == ["p"]
    assert isinstance(workflow.dataset.transform, VolumePreprocessing)
    assert isinstance(workflow.inferer, SlicePredictor)
    assert isinstance(workflow.evaluator, VolumeBatchInference)
    assert isinstance(workflow.parser.get_parsed_content("postprocessing"), InfectionPostprocessing)


def test_evaluate_config_is_a_monai_eval_workflow(semiseg_dir, tmp_path):
    from covseg.engines.evaluation.slices import SliceEvaluation

    workflow = _workflow("evaluate", "eval", dataset_dir=str(semiseg_dir), output_dir=str(tmp_path))
    _assert_complete(workflow)
    assert isinstance(workflow.evaluator, SliceEvaluation) and len(workflow.dataset) == 48


def test_train_config_is_a_monai_train_workflow(semiseg_dir, tmp_path):
    workflow = _workflow("train", "train", dataset_dir=str(semiseg_dir), output_dir=str(tmp_path), train_limit=4,
                         image_size=64)
    _assert_complete(workflow)
    assert workflow.max_epochs == 100 and len(workflow.train_dataset) >= 1
    assert type(workflow.train_inferer).__name__ == "SimpleInferer"


def test_semi_infnet_train_config_is_a_monai_train_workflow(semiseg_dir, tmp_path):
    from covseg.engines.training.semi_procedure import SemiInfNet

    workflow = _workflow("train", "train", SEMI, dataset_dir=str(semiseg_dir), output_dir=str(tmp_path),
                         train_limit=4, unlabelled_limit=2)
    _assert_complete(workflow)
    assert isinstance(workflow.trainer, SemiInfNet) and workflow.max_epochs == 0
    assert len(workflow.train_dataset) == 3 and len(workflow.trainer.unlabelled) == 2
    assert type(workflow.train_inferer).__name__ == "SimpleInferer"
    assert workflow.trainer.rounds.labeller == "teacher" and workflow.trainer.student_init == "teacher"
    assert workflow.trainer.student_weight == 0.25  # the WiSE-FT blend that made 0.3.0
    assert workflow.trainer.rounds.passes == 3 and workflow.trainer.rounds.epochs == 1
    assert not list(tmp_path.iterdir())  # building the workflow trains nothing


@pytest.mark.parametrize(("name", "workflow_type"), [("evaluate", "eval"), ("inference", "infer")])
def test_semi_infnet_evaluate_and_inference_configs_are_monai_workflows(semiseg_dir, tmp_path, name, workflow_type):
    """Checked with bundles/infnet's weights (same network) where the bundle's own are not shipped."""
    weights = SEMI / "models" / "model.pt"
    weights = weights if weights.exists() else INFNET_BUNDLE / "models" / "model.pt"
    data = str(semiseg_dir) if name == "evaluate" else str(tmp_path / "none.nii.gz")
    workflow = _workflow(name, workflow_type, SEMI, dataset_dir=data, output_dir=str(tmp_path), weights=str(weights))
    _assert_complete(workflow)


def test_a_missing_property_is_reported(tmp_path):
    """The check can fail: without an evaluator the inference workflow is incomplete."""
    from monai.bundle import ConfigWorkflow

    config = tmp_path / "configs" / "inference.yaml"
    config.parent.mkdir()
    text = (CONFIGS / "inference.yaml").read_text()
    config.write_text(text.replace("\nevaluator:\n", "\nsomething_else:\n"))
    (tmp_path / "configs" / "metadata.json").write_text((CONFIGS / "metadata.json").read_text())
    workflow = ConfigWorkflow(config_file=str(config), workflow_type="infer", logging_file=False)
    with pytest.raises(KeyError, match="evaluator"):
        workflow.initialize()
        workflow.check_properties()


@pytest.mark.parametrize("bundle", sorted(p.parent.parent.name for p in BUNDLES.glob("*/configs/metadata.json")))
def test_monai_reads_each_bundles_metadata_as_written(bundle):
    """MONAI renames deprecated metadata keys on reading (``optional_packages_version`` replaces
    ``required_packages_version``); what it reads must be what the file says, the required packages included."""
    import json

    from monai.bundle import ConfigParser

    meta_file = BUNDLES / bundle / "configs" / "metadata.json"
    written = json.loads(meta_file.read_text())
    parser = ConfigParser()
    parser.read_meta(f=str(meta_file))
    read = parser.get("_meta_")
    assert read["required_packages_version"] == written["required_packages_version"]
    assert "covseg" in read["required_packages_version"]
    assert read.keys() == written.keys()


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        found = [node["_target_"]] if isinstance(node.get("_target_"), str) else []
        return found + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


@pytest.mark.parametrize("config", sorted(str(p.relative_to(BUNDLES))
                                          for p in BUNDLES.glob("*/configs/*.yaml")))
def test_every_config_import_and_target_exists(config):
    """Each bundle config's ``imports`` run and each ``_target_`` names something importable (a config whose
    helper was renamed fails only when that run id is used)."""
    from pydoc import locate  # what MONAI's ConfigComponent resolves a _target_ with

    import yaml

    data = yaml.safe_load((BUNDLES / config).read_text()) or {}
    for line in data.get("imports", []):
        exec(str(line).lstrip("$"), {})  # noqa: S102 - the config's own import lines
    for target in _targets(data):
        if "." in target and not target.startswith(("$", "@")):
            assert locate(target) is not None, f"{config}: _target_ {target} not found"


@pytest.mark.parametrize(("bundle", "config", "missing"), [
    ("infnet", "train", "train/labeled/images"), ("infnet", "evaluate", "test/images"),
    ("semi_infnet", "train", "train/labeled/images"), ("multiclass_infnet", "evaluate", "test/images"),
    ("jcs_segmenter", "train", "train/labeled/images"), ("jcs_classifier", "evaluate", ""),
    ("jcs_classifier", "evaluate", "labels.csv"), ("jcs_classifier", "train", "labels.csv")])
def test_a_missing_dataset_is_one_error_line_not_a_traceback(bundle, config, missing, tmp_path):
    """``run`` of a training or evaluation config on a dataset folder that is not there (or lacks the split it
    reads, or, for the classifier, the ``labels.csv`` it reads): exit status 1 and one ``error:`` line naming the
    folder or file (MONAI printed ~50 lines of traceback)."""
    import subprocess

    root = tmp_path / ("data" if missing else "nowhere")
    if missing:  # the folder is there, the split it reads is not
        root.mkdir()
    run_id = {"train": "training", "evaluate": "evaluate"}[config]
    done = subprocess.run(monai_bundle_run(BUNDLES / bundle, run_id, f"{config}.yaml", "--dataset_dir", str(root),
                                           "--output_dir", str(tmp_path / "out")),
                          capture_output=True, text=True, timeout=300, cwd=BUNDLES.parent)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(errors) == 1
    assert errors[0].startswith(f"error: {root / missing if missing else root}: not found")


def test_classifier_evaluate_of_an_empty_selection_is_one_error_line(tmp_path):
    """A ``labels.csv`` without the splits asked for: one ``error:`` line naming it, exit status 1."""
    import subprocess

    data = tmp_path / "slices"
    data.mkdir()
    (data / "labels.csv").write_text("file,label,source,split\na.png,1,x,train\n")
    done = subprocess.run(monai_bundle_run(BUNDLES / "jcs_classifier", "evaluate", "evaluate.yaml", "--dataset_dir",
                                           str(data), "--output_dir", str(tmp_path / "out")),
                          capture_output=True, text=True, timeout=300, cwd=BUNDLES.parent)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith(f"error: {data / 'labels.csv'}: no slice of sources")


JCS_AND_MULTICLASS = [
    ("jcs_segmenter", "train", "train", {"train_limit": 2, "image_size": 64}, "ResumableEngine"),
    ("jcs_segmenter", "evaluate", "eval", {}, "SliceEvaluation"),
    ("multiclass_infnet", "train", "train", {"train_limit": 2, "image_size": 64, "prior_image_size": 64,
                                             "prior_draws": 1}, "ResumableEngine"),
    ("multiclass_infnet", "evaluate", "eval", {}, "MulticlassEvaluation"),
    ("jcs_classifier", "train", "train", {"train_limit": 2, "image_size": 64}, "ResumableEngine"),
    ("jcs_classifier", "evaluate", "eval", {"splits": ["val"], "sources": ["ucsd-covid-ct"]}, "ClassifierEvaluation"),
]


@pytest.mark.parametrize(("bundle", "name", "workflow_type", "overrides", "runs_it"), JCS_AND_MULTICLASS,
                         ids=[f"{b}-{n}" for b, n, *_ in JCS_AND_MULTICLASS])
def test_jcs_and_multiclass_train_and_evaluate_configs_are_monai_workflows(semiseg_dir, cls_dir, tmp_path, bundle,
                                                                          name, workflow_type, overrides, runs_it):
    """The standard names (``train#trainer``, ``train#dataset``, ``train#inferer``; ``dataset``, ``inferer``,
    ``evaluator``) are the objects each bundle's ``training`` / ``evaluate`` run uses; building them trains and
    writes nothing."""
    data = cls_dir if bundle == "jcs_classifier" else semiseg_dir
    out = tmp_path / "out"
    workflow = _workflow(name, workflow_type, BUNDLES / bundle, dataset_dir=str(data), output_dir=str(out),
                         **overrides)
    _assert_complete(workflow)
    if workflow_type == "train":
        assert type(workflow.trainer).__name__ == runs_it and len(workflow.train_dataset) >= 1
        assert type(workflow.train_inferer).__name__ == "SimpleInferer"
        assert workflow.parser.get_parsed_content("trainer") is workflow.trainer  # the short name older runs use
    else:
        assert type(workflow.evaluator).__name__ == runs_it and len(workflow.dataset) >= 1
        ev = workflow.evaluator.dataset  # the same items (a list of paths is copied as paths)
        assert ev is workflow.dataset or list(map(str, ev)) == list(map(str, workflow.dataset))
    assert not out.exists() or not any(p.suffix == ".pt" for p in out.rglob("*"))  # nothing trained or scored


def test_classifier_inference_config_is_the_joint_diagnosis_workflow(tmp_path):
    """The classifier bundle's ``inference.yaml`` builds the joint diagnosis from MONAI's names (no call into the
    CLI): its ``inferer`` scores slices with the bundle's classifier, its ``evaluator`` runs the diagnosis as the
    per-volume step and segments with the segmenter bundle."""
    from covseg.engines.inference.dataset import VolumeDataset
    from covseg.engines.inference.evaluator import VolumeBatchInference
    from covseg.engines.inference.slice_scorer import SliceScorer

    ct = write_phantom(tmp_path / "in" / "p.nii.gz", make_chest_phantom(shape=(6, 48, 48), spacing=(7.0, 7.0, 12.0),
                                                                         seed=1))["ct"]
    workflow = _workflow("inference", "infer", BUNDLES / "jcs_classifier", dataset_dir=str(ct),
                         output_dir=str(tmp_path / "out"), segmenter=str(INFNET_BUNDLE), backend="torch")
    _assert_complete(workflow)
    assert isinstance(workflow.dataset, VolumeDataset) and [s.name for s in workflow.dataset.data] == ["p"]
    assert isinstance(workflow.inferer, SliceScorer)
    assert workflow.inferer.network is workflow.parser.get_parsed_content("classifier").network
    assert isinstance(workflow.evaluator, VolumeBatchInference) and workflow.evaluator.prepare is not None
    assert workflow.evaluator.model_info["classifier"]["name"] == "jcs_classifier"
    assert not (tmp_path / "out").exists()  # building the workflow diagnoses nothing
