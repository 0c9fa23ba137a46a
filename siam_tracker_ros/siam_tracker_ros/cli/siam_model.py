"""siam-model: import, fetch, export and inspect tracker models."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
from typing import List, Optional

from ..core.manifest import ModelError


def _import_nanotrack(args) -> int:
    from ..nets.nanotrack_import import import_nanotrack
    spec = import_nanotrack(args.folder, args.out, name=args.name)
    print(f'imported {spec.name} ({spec.arch}) into {spec.root}')
    return 0


def _fetch(args) -> int:
    from ..factory import model_cache_dir
    from ..nets.fetch import fetch_model
    out = Path(args.out) if args.out else model_cache_dir() / args.name
    spec = fetch_model(args.name, out, mirror=args.mirror)
    print(f'fetched {spec.name} into {spec.root}')
    return 0


def _export(args) -> int:
    from ..nets.export import export_nanotrack
    version = int(args.arch.rsplit('v', 1)[-1])
    spec = export_nanotrack(version, args.checkpoint, args.out, modules=args.modules)
    extra = ''.join(text for text, on in (
        (f', with a template-fusion graph of {spec.fusion_memory} memory slots',
         spec.has_fusion),
        (f', with a temporal search graph of {spec.temporal_frames} previous frames',
         spec.temporal_frames)) if on)
    print(f'exported {spec.name} ({spec.layout}{extra}) into {spec.root}')
    return 0


def _info(args) -> int:
    from ..factory import resolve_model
    spec = resolve_model(args.model)
    print(json.dumps(spec.to_manifest(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser of siam-model."""
    from ..nets.fetch import CATALOG, DEFAULT_MODEL
    parser = argparse.ArgumentParser(prog='siam-model', description=__doc__)
    sub = parser.add_subparsers(dest='command', required=True)

    imp = sub.add_parser('import', help='turn an upstream model into a product model directory')
    imp_sub = imp.add_subparsers(dest='family', required=True)
    nano = imp_sub.add_parser('nanotrack', help='an upstream NanoTrack folder '
                              '(nanotrack_backbone*.onnx, nanotrack_head*.onnx, configvN.yaml)')
    nano.add_argument('folder', help='upstream NanoTrack folder')
    nano.add_argument('--out', required=True, help='model directory to write')
    nano.add_argument('--name', help='model name (default nanotrack-vN)')
    nano.set_defaults(handler=_import_nanotrack)

    fetch = sub.add_parser('fetch', help='download a published model (sha256-checked)')
    fetch.add_argument('name', nargs='?', default=DEFAULT_MODEL, choices=sorted(CATALOG))
    fetch.add_argument('--out', help='model directory to write (default: the model cache)')
    fetch.add_argument('--mirror', help='folder or URL laid out as MIRROR/NAME/FILE '
                       '(default: $SIAM_MODEL_MIRROR, else the pinned upstream URLs)')
    fetch.set_defaults(handler=_fetch)

    export = sub.add_parser('export', help='export a NanoTrack checkpoint (.pth) to split '
                            'TensorRT-ready ONNX graphs (template + search)')
    export.add_argument('arch', choices=['nanotrack-v1', 'nanotrack-v2', 'nanotrack-v3'])
    export.add_argument('--checkpoint', required=True, help='upstream nanotrackvN.pth, or a '
                        "siam-train run's model.pth")
    export.add_argument('--modules', help="a siam-train run's modules.pth: adds its learned "
                        'template fusion (fusion.onnx) and puts its layer aggregation (both '
                        'graphs), TAFA temporal shift, feature modulation and DA attention '
                        '(search graph) in the graphs, when it has them')
    export.add_argument('--out', required=True, help='model directory to write')
    export.set_defaults(handler=_export)

    info = sub.add_parser('info', help='print the manifest of a model directory')
    info.add_argument('model', help='model directory or upstream NanoTrack folder')
    info.set_defaults(handler=_info)

    from .model_tools import add_subcommands
    add_subcommands(sub, imp_sub)        # import pysot, build-engine, check-backend
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ModelError, ValueError, OSError) as exc:
        print(f'siam-model: error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
