"""The shared CLI: ``<domain> pretrain | finetune | probe | embed | reconstruct | prepare | check | info``.

Each verb is a thin wrapper over library functions (config loading, ``create_model``,
``run_pretrain``, probes) and the domain's hooks (:class:`maecore.cli.domain.Domain`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from maecore.atomic import atomic_write_text
from maecore.cli.domain import Domain
from maecore.config import dump_config, load_config, model_kwargs, shipped_configs
from maecore.errors import MAEError

VERBS = ("pretrain", "finetune", "probe", "embed", "reconstruct", "prepare", "check", "info")
log = logging.getLogger("maecore.cli")


def _common_run_args(p: argparse.ArgumentParser, domain: Domain) -> None:
    names = ", ".join(sorted(shipped_configs(domain.package)))
    p.add_argument("--config", default=None, help=f"shipped config name ({names}) or a YAML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=1e-3 (repeatable)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/<domain>-<verb>-<time>)")
    p.add_argument("--max-steps", type=int, default=None, help="shortcut for --set train.max_steps=N")
    p.add_argument("--devices", default=None, help="shortcut for --set train.devices=N")
    p.add_argument("--seed", type=int, default=None, help="shortcut for --set train.seed=N")


def build_parser(domain: Domain) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=domain.name, description=domain.description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    helps = {
        "pretrain": "masked pretraining (with no --data: the bundled real sample)",
        "finetune": "fine-tune an exported model on labelled data",
        "probe": "linear and kNN probes on frozen embeddings, against a random-init model",
        "embed": "write embeddings of inputs",
        "reconstruct": "reconstruct masked or missing parts of an input and write it as a file",
        "prepare": "compute dataset statistics / write shards",
        "check": "validate a dataset without training; report every bad file",
        "info": "versions, registered models, devices and backends",
    }
    for verb in VERBS:
        p = sub.add_parser(verb, help=helps[verb], description=helps[verb])
        if verb in ("pretrain", "finetune", "probe", "prepare", "check"):
            _common_run_args(p, domain)
        if verb in ("pretrain", "finetune", "probe", "check", "prepare"):
            p.add_argument("--data", default=None, help="data path, folder or glob (default: bundled sample)")
        if verb == "pretrain":
            p.add_argument("--resume", default=None, help="'auto' (continue the run in --out) or a checkpoint")
            p.add_argument("--skip-bad", action="store_true", help="skip bad files (listed) instead of stopping")
        if verb in ("finetune", "probe", "embed", "reconstruct"):
            p.add_argument("--model", type=Path, required=True, help="exported model folder (RUN/export)")
        domain.add_arguments(verb, p)
    return parser


def config_overrides(args: argparse.Namespace) -> list[str]:
    sets = list(args.set)
    for flag, key in (("max_steps", "train.max_steps"), ("devices", "train.devices"), ("seed", "train.seed")):
        value = getattr(args, flag, None)
        if value is not None:
            sets.append(f"{key}={value}")
    return sets


def run_dir_of(args: argparse.Namespace, domain: Domain) -> Path:
    if args.out is not None:
        return Path(args.out)
    return Path("runs") / f"{domain.name}-{args.verb}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_pretrain(domain: Domain, args: argparse.Namespace) -> int:
    import torch

    from maecore.models import create_model
    from maecore.tasks import TrainConfig, run_pretrain

    cfg = load_config(domain.package, args.config, config_overrides(args))
    run_dir = run_dir_of(args, domain)
    train_cfg = TrainConfig.from_dict(cfg.get("train", {}))
    dataset = domain.pretrain_dataset(cfg, args.data, args.skip_bad)
    name, kwargs = model_kwargs(cfg)
    torch.manual_seed(train_cfg.seed)  # the initial weights too follow train.seed: one command, one result
    model = create_model(name, **kwargs)
    model.meta = {"domain": domain.name, **domain.model_meta(cfg, dataset)}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    summary = run_pretrain(model, dataset, run_dir, train_cfg, resume=args.resume)
    fig = domain.figure(model, dataset, run_dir / "figures" / "reconstruction.png")
    summary["figure"] = str(fig) if fig else None
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    print(f"run folder: {run_dir}\nexported model: {summary.get('export_dir')}\nfigure: {summary['figure']}")
    return 0


def cmd_finetune(domain: Domain, args: argparse.Namespace) -> int:
    from maecore.models import load_pretrained
    from maecore.tasks import TrainConfig
    from maecore.tasks.finetune import run_finetune

    cfg = load_config(domain.package, args.config, config_overrides(args))
    run_dir = run_dir_of(args, domain)
    model = load_pretrained(args.model)
    data = domain.labelled_data(cfg, args)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    ft = cfg.get("finetune", {})
    summary = run_finetune(
        model, data.train, data.val, run_dir, TrainConfig.from_dict(cfg.get("train", {})),
        task=data.task, n_classes=data.n_classes, class_names=data.class_names, **ft,
    )
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, indent=2, default=str))
    return 0


def cmd_probe(domain: Domain, args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from maecore.models import load_pretrained
    from maecore.tasks.data import collate_dict
    from maecore.tasks.probe import compare_to_random

    cfg = load_config(domain.package, args.config, config_overrides(args))
    model = load_pretrained(args.model)
    data = domain.labelled_data(cfg, args)
    loader = DataLoader(data.train, batch_size=int(cfg["train"].get("batch_size", 8)), collate_fn=collate_dict)
    y = [int(s["label"]) for s in data.train]  # type: ignore[attr-defined]
    result = compare_to_random(model, loader, y, groups=data.groups, seed=int(cfg["train"].get("seed", 0)),
                               probes=("linear", "knn", "svm"))
    run_dir = run_dir_of(args, domain)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "probe.json", json.dumps(result, indent=2, default=float))
    print(json.dumps(result, indent=2, default=float))
    return 0


def cmd_embed(domain: Domain, args: argparse.Namespace) -> int:
    from maecore.models import load_pretrained

    result = domain.embed(load_pretrained(args.model).eval(), args)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_reconstruct(domain: Domain, args: argparse.Namespace) -> int:
    from maecore.models import load_pretrained

    result = domain.reconstruct(load_pretrained(args.model).eval(), args)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_prepare(domain: Domain, args: argparse.Namespace) -> int:
    cfg = load_config(domain.package, args.config, config_overrides(args))
    print(json.dumps(domain.prepare(cfg, args), indent=2, default=str))
    return 0


def cmd_check(domain: Domain, args: argparse.Namespace) -> int:
    cfg = load_config(domain.package, args.config, config_overrides(args))
    paths = [args.data] if args.data else []
    n, problems = domain.check(paths, cfg)
    for p in problems:
        print(f"BAD  {p}")
    print(f"checked {n} item(s): {n - len(problems)} good, {len(problems)} bad")
    return 1 if problems else 0


def cmd_info(domain: Domain, args: argparse.Namespace) -> int:
    import torch

    import maecore
    from maecore.models import list_models
    from maecore.tasks.memory import describe as describe_malloc

    info: dict[str, Any] = {
        "package": domain.name,
        "maecore": maecore.__version__,
        "torch": torch.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cuda_devices": torch.cuda.device_count(),
        "cpu_malloc": describe_malloc(),
        "configs": sorted(shipped_configs(domain.package)),
        "models": list_models(),
    }
    try:
        from maecore.pointops import backend

        info["point_ops_backend"] = backend()
    except ImportError:
        pass
    info.update(domain.info())
    for k, v in info.items():
        print(f"{k:>18}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return 0


COMMANDS: dict[str, Callable[[Domain, argparse.Namespace], int]] = {
    "pretrain": cmd_pretrain,
    "finetune": cmd_finetune,
    "probe": cmd_probe,
    "embed": cmd_embed,
    "reconstruct": cmd_reconstruct,
    "prepare": cmd_prepare,
    "check": cmd_check,
    "info": cmd_info,
}


def build_cli(
    domain: Domain, commands: dict[str, Callable[[Domain, argparse.Namespace], int]] | None = None
) -> Callable[[Sequence[str] | None], int]:
    """Return ``main(argv) -> exit code`` for a domain's console script.

    ``commands`` replaces the implementation of some verbs (``{"finetune": fn}``, ``fn(domain,
    args) -> exit code``; :func:`config_overrides` and :func:`run_dir_of` give what the core's own
    verbs use); the verbs, their arguments and the error handling stay the core's.
    """
    unknown = set(commands or {}) - set(COMMANDS)
    if unknown:
        raise ValueError(f"unknown verb(s) {sorted(unknown)}; the verbs are {', '.join(VERBS)}")
    table = {**COMMANDS, **(commands or {})}

    def main(argv: Sequence[str] | None = None) -> int:
        args = build_parser(domain).parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
        try:
            domain.resolve_args(args.verb, args)
            return table[args.verb](domain, args)
        except (MAEError, ValueError, KeyError, NotImplementedError, FileNotFoundError) as err:
            if args.verbose:
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"{domain.name} {args.verb}: error: {msg}", file=sys.stderr)
            return 2

    return main
