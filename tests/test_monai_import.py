"""covseg.monai_import: MONAI imported without torch.distributed.optim (FSDP, DTensor, sympy), and ignite's ZeRO
test giving what it always gave; ``covseg infer`` on torch never imports FSDP. Each case runs in a fresh
interpreter, since what matters is what a process imports."""

from __future__ import annotations

from utils import run_python

from covseg.synthetic.phantom import make_chest_phantom, write_phantom

HEAVY = "('torch.distributed.optim', 'torch.distributed.fsdp', 'sympy')"


def test_import_monai_skips_the_zero_optimizer_import_and_keeps_ignites_type_test(tmp_path):
    code = (
        "import sys\n"
        "from covseg.monai_import import import_monai\n"
        "import_monai()\n"
        "import ignite.handlers.checkpoint as ck\n"
        f"assert 'monai.bundle' in sys.modules and not set({HEAVY}) & set(sys.modules), sorted(sys.modules)\n"
        "import torch, torch.distributed.optim as real\n"
        "assert not getattr(real, '__covseg_stand_in__', False) and sys.modules['torch.distributed.optim'] is real\n"
        "zero = object.__new__(real.ZeroRedundancyOptimizer)  # a ZeRO optimizer needs a process group to be built\n"
        "sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)\n"
        "assert isinstance(zero, ck.ZeroRedundancyOptimizer) and not isinstance(sgd, ck.ZeroRedundancyOptimizer)\n"
        "assert issubclass(real.ZeroRedundancyOptimizer, ck.ZeroRedundancyOptimizer)\n"
        "from ignite.engine import Engine\n"
        "net = torch.nn.Linear(2, 1)\n"
        "saver = ck.Checkpoint({'model': net, 'optimizer': sgd}, ck.DiskSaver(sys.argv[1], require_empty=False))\n"
        "saver(Engine(lambda e, b: None))\n"
        "print(sorted(p.name for p in __import__('pathlib').Path(sys.argv[1]).iterdir()))\n"
    )
    proc = run_python(code, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint_0.pt" in proc.stdout


def test_import_monai_after_monai_is_plain_monai():
    proc = run_python("import sys, monai\nfrom covseg.monai_import import import_monai\n"
                      "assert import_monai() is monai and 'torch.distributed.optim' in sys.modules\n")
    assert proc.returncode == 0, proc.stderr


def test_covseg_infer_on_torch_never_imports_fsdp(tmp_path):
    ct = write_phantom(tmp_path / "p.nii.gz", make_chest_phantom(shape=(4, 48, 48), spacing=(7.0, 7.0, 12.0)))["ct"]
    code = (
        "import sys\n"
        "from covseg.cli.main import main\n"
        "code = main(['infer', sys.argv[1], '--out', sys.argv[2], '--backend', 'torch', '--no-progress',"
        " '--model', 'unet', '--image-size', '64'])\n"
        f"heavy = sorted(set({HEAVY}) & set(sys.modules))\n"
        "assert code == 0 and 'monai' in sys.modules and not heavy, (code, heavy)\n"
    )
    proc = run_python(code, str(ct), str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr[-2000:]
