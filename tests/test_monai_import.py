"""covseg.monai_import: MONAI imported without the modules it imports for features covseg's infer path never uses
(torch.distributed.optim with FSDP and sympy, scipy.signal, matplotlib, scikit-learn, ...), and MONAI's features that
use them giving what they always gave; ``covseg infer`` on torch never imports them. Each case runs in a fresh
interpreter, since what matters is what a process imports."""

from __future__ import annotations

from utils import python_output

from covseg.synthetic.phantom import make_chest_phantom
from covseg.synthetic.phantom_nifti import write_phantom

HEAVY = ("('torch.distributed.optim', 'torch.distributed.fsdp', 'sympy', 'scipy.signal', 'sklearn', 'itk', "
         "'scipy.optimize', 'torch.utils.tensorboard', 'requests', 'pydicom')")
HEAVY_AT_IMPORT = HEAVY[:-1] + ", 'scipy.sparse')"  # the pictures' skimage.transform imports it after the network

# MONAI's features that use a deferred module, each reduced to a number; printed as one dict
MONAI_FEATURES = """
import sys, numpy as np, torch
if sys.argv[1] == 'covseg':
    from covseg.monai_import import DEFERRED_MODULES, import_monai
    import_monai()
    assert not set(DEFERRED_MODULES) & set(sys.modules), sorted(set(DEFERRED_MODULES) & set(sys.modules))
else:
    import monai
from monai.data import ultrasound_confidence_map as ucm
from monai.metrics import embedding_collapse as ec
from monai.metrics import utils as mu
from monai.transforms import utils as tu
from monai.transforms.signal import array as signal
from monai.utils import jupyter_utils as ju
from monai.visualize import utils as vu
from monai.metrics import panoptic_quality as pq
from monai.visualize import img2tensorboard as tb
from monai.data import image_reader as ir
from monai.bundle import scripts as bs
import nibabel.nifti1 as nifti1
rs = np.random.RandomState(0)


def summary_files(writer_type):
    import os, tempfile
    with tempfile.TemporaryDirectory() as folder:
        writer = writer_type(log_dir=folder)
        writer.add_scalar('loss', 1.0)
        writer.close()
        return len(os.listdir(folder))


image = rs.rand(1, 16, 16).astype('float32')
label = (image > 0.5).astype('float32')
points = rs.rand(20, 3)
print({
    'flags': (ec.has_sklearn, ec.has_sklearn_linear, tu.has_morphology, tu.has_measure, ju.has_matplotlib),
    'blend_images (matplotlib)': round(float(vu.blend_images(image, label).sum()), 3),
    'hilbert (scipy.signal)': np.abs(ucm.hilbert(np.arange(8.0))).round(4).tolist(),
    'iirnotch (scipy.signal)': np.round(signal.iirnotch(60, 30, 500)[0], 6).tolist(),
    'silhouette (sklearn)': round(float(ec.sklearn_silhouette(points, np.arange(20) % 2)), 6),
    'logistic (sklearn)': round(float(ec.sklearn_logistic().fit(points, np.arange(20) % 2).coef_.sum()), 6),
    'largest component (skimage)': int(tu.get_largest_connected_component_mask(torch.tensor(label > 0)).sum()),
    'KDTree (scipy.spatial)': round(float(mu.KDTree(points).query(points[:3], k=2)[0].sum()), 6),
    'pyplot later': type(sys.modules['matplotlib.pyplot'].figure).__name__,
    'flags 2': (ir.has_pydicom, bs.has_requests, nifti1.have_dicom),
    'linear_sum_assignment (scipy.optimize)': [a.tolist() for a in pq.linear_sum_assignment(rs.rand(3, 3))],
    'spsolve (scipy.sparse)': np.round(ucm.spsolve(ucm.csc_matrix(np.eye(3) * 2), np.ones(3)), 6).tolist(),
    'SummaryWriter (torch.utils.tensorboard)': summary_files(tb.SummaryWriter),
    'DICOM extension (pydicom)': isinstance(nifti1.Nifti1DicomExtension(2, None).get_content(),
                                            sys.modules['pydicom'].Dataset),
})
"""


def test_import_monai_skips_the_zero_optimizer_import_and_keeps_ignites_type_test(tmp_path):
    printed = python_output(f"""
        import sys
        from covseg.monai_import import import_monai
        import_monai()
        import ignite.handlers.checkpoint as ck
        assert 'monai.bundle' in sys.modules and not set({HEAVY_AT_IMPORT}) & set(sys.modules), sorted(sys.modules)
        import torch, torch.distributed.optim as real
        assert not getattr(real, '__covseg_stand_in__', False) and sys.modules['torch.distributed.optim'] is real
        zero = object.__new__(real.ZeroRedundancyOptimizer)  # a ZeRO optimizer needs a process group to be built
        sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        assert isinstance(zero, ck.ZeroRedundancyOptimizer) and not isinstance(sgd, ck.ZeroRedundancyOptimizer)
        assert issubclass(real.ZeroRedundancyOptimizer, ck.ZeroRedundancyOptimizer)
        from ignite.engine import Engine
        net = torch.nn.Linear(2, 1)
        saver = ck.Checkpoint({{'model': net, 'optimizer': sgd}}, ck.DiskSaver(sys.argv[1], require_empty=False))
        saver(Engine(lambda e, b: None))
        print(sorted(p.name for p in __import__('pathlib').Path(sys.argv[1]).iterdir()))
        """, str(tmp_path))
    assert "checkpoint_0.pt" in printed


def test_import_monai_after_monai_is_plain_monai():
    python_output("""
        import sys, monai
        from covseg.monai_import import import_monai
        assert import_monai() is monai and 'torch.distributed.optim' in sys.modules
        """)


def test_covseg_infer_on_torch_never_imports_fsdp_scipy_signal_or_sklearn(tmp_path):
    ct = write_phantom(tmp_path / "p.nii.gz", make_chest_phantom(shape=(4, 48, 48), spacing=(7.0, 7.0, 12.0)))["ct"]
    python_output(f"""
        import sys
        from covseg.cli.main import main
        code = main(['infer', sys.argv[1], '--out', sys.argv[2], '--backend', 'torch', '--no-progress',
                     '--model', 'unet', '--image-size', '64'])
        heavy = sorted(set({HEAVY}) & set(sys.modules))
        assert code == 0 and 'monai' in sys.modules and not heavy, (code, heavy)
        """, str(ct), str(tmp_path / "out"))


def test_monai_features_that_use_deferred_modules_give_what_plain_monai_gives():
    with_stand_ins, plain = python_output(MONAI_FEATURES, "covseg"), python_output(MONAI_FEATURES, "plain")
    assert "(True, True, True, True, True)" in plain
    assert with_stand_ins == plain


def test_stand_ins_leave_and_later_imports_get_the_real_modules():
    python_output("""
        import importlib.util, sys
        from covseg.monai_import import DEFERRED_MODULES, import_monai
        import_monai()
        import matplotlib, matplotlib.pyplot as plt, scipy.signal, sklearn.metrics
        for name in DEFERRED_MODULES:
            if importlib.util.find_spec(name.partition('.')[0]) is None:  # not installed (requests, itk: optional)
                try:
                    __import__(name)
                except ModuleNotFoundError:
                    continue
                raise AssertionError(f'{name} is not installed, yet it imports')
            __import__(name)
            assert not getattr(sys.modules[name], '__covseg_stand_in__', False), name
        assert matplotlib.pyplot is plt and hasattr(plt, 'subplots') and callable(scipy.signal.hilbert)
        import monai.visualize.utils as vu
        assert vu.plt.colormaps is plt.colormaps  # a module MONAI kept answers with the real objects now
        """)


def test_a_deferred_name_used_while_the_stand_ins_are_in_imports_the_real_package_and_module():
    python_output("""
        import sys
        from covseg import monai_import as mi
        names = ('sklearn', 'sklearn.metrics')
        sys.modules.update({n: mi._stand_in(n) for n in names})
        mi._importing = True
        accuracy = sys.modules['sklearn.metrics'].accuracy_score  # as MONAI's import would bind it
        assert accuracy([0, 1, 1], [0, 1, 0]) == 2 / 3  # the stand-in package is no package: both leave
        assert not any(getattr(sys.modules[n], '__covseg_stand_in__', False) for n in names)
        import sklearn.metrics
        assert isinstance(sklearn.metrics.confusion_matrix([0], [0]), __import__('numpy').ndarray)
        """)
