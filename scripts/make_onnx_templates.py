"""Write each shipped bundle's ONNX template (``models/model.onnx-template``): its export without the weights.

Usage::

    python scripts/make_onnx_templates.py [BUNDLE ...]     # default: every bundle under bundles/

Run it after a change to ``covseg/networks``, the exporter (``covseg/engines/runtime/onnx_runtime.py``,
``onnx_template.py``), a bundle's ``network_def`` or a chain's settings: ``tests/test_onnx_template.py`` fails
until the templates are made again. A multi-class bundle's template is its whole chain (the binary bundle's
network, then its head). Networks that the tracing exporter refuses get no template; their first ONNX Runtime run
exports as before (``covseg/engines/runtime/onnx_template.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    from covseg.engines.runtime.onnx_runtime import TraceRefused
    from covseg.engines.runtime.onnx_template import TEMPLATE_NAME, template_definition
    from covseg.engines.runtime.onnx_template_make import make_template
    from covseg.networks.loading import bundle_meta, bundle_parser, load_bundle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="*", type=Path)
    args = parser.parse_args(argv)
    bundles = args.bundles or sorted(p.parent.parent for p in (REPO / "bundles").glob("*/models/model.pt"))
    for bundle in bundles:
        config = bundle_parser(bundle)
        meta = bundle_meta(config, bundle)
        size = int(meta.get("image_size", 352))
        try:
            path = make_template(load_bundle(bundle).network, size, bundle / "models" / TEMPLATE_NAME,
                                 template_definition(bundle))
        except (TraceRefused, ValueError) as exc:
            print(f"{bundle.name}: no template ({exc})")
            continue
        print(f"{bundle.name}: {path} ({path.stat().st_size / 1e3:.0f} kB, {size}²)")


if __name__ == "__main__":
    main()
