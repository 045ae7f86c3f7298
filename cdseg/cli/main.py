"""`cdseg` entry point: command registry, global options, exit codes (0 ok, 2 bad input, 1 other)."""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from cdseg import __version__
from cdseg.cli.command import Command
from cdseg.config.fields import iter_leaf_fields
from cdseg.errors import EXIT_RETRYABLE, ConfigError, TransientError, UserError

log = logging.getLogger("cdseg")

#: command path -> (module holding COMMAND, one-line help). Modules are imported only when used,
#: so `cdseg --help` does not import torch.
REGISTRY: dict[str, tuple[str, str]] = {
    "synth": ("cdseg.cli.synth", "generate aerial scenes in the ISPRS Potsdam/Vaihingen release layout"),
    "prepare": ("cdseg.cli.prepare", "turn an ISPRS release (or generated scenes) into a prepared dataset"),
    "train": ("cdseg.cli.train", "train one incremental step (single process or under torchrun)"),
    "test": ("cdseg.cli.test", "evaluate a checkpoint on whole test scenes (old/new/all classes)"),
    "report": ("cdseg.cli.report", "compare steps and methods in one Markdown + HTML report"),
    "pipeline compile": ("cdseg.cli.pipeline", "compile the Kubeflow pipeline for a task to YAML"),
    "pipeline run": ("cdseg.cli.pipeline", "run the Kubeflow pipeline locally (KFP local runner)"),
    "pipeline submit": ("cdseg.cli.pipeline", "submit the Kubeflow pipeline to a KFP endpoint"),
    "launch": ("cdseg.cli.launch", "run one incremental step as a TrainJob or PyTorchJob on Kubernetes"),
    "launch cleanup": ("cdseg.cli.launch", "delete the training jobs (and their ConfigMaps) a run left behind"),
    "demo": ("cdseg.cli.demo", "the main job: synth -> pipeline (local, CPU) -> per-step table and report"),
    "experiment": ("cdseg.cli.experiment", "a grid of tasks x methods x seeds, with statistics over seeds"),
    "bench prepare": ("cdseg.cli.bench", "benchmark prepare against its CPU bound and gdal_translate"),
    "bench train": ("cdseg.cli.bench", "benchmark step time and FLOPs of every method against ft"),
    "bench eval": ("cdseg.cli.bench", "benchmark full-scene inference"),
    "bench storage": ("cdseg.cli.bench", "benchmark the storage layer against plain boto3"),
    "bench ddp": ("cdseg.cli.bench", "benchmark DDP steps against plain steps (run under torchrun)"),
    "bench gpu": ("cdseg.cli.bench", "the one GPU check: every bench with the paper's model, within a time budget"),
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("global options")
    group.add_argument("--config", metavar="YAML", help="read options from a YAML file (CLI and CDSEG_* env vars win)")
    group.add_argument("--log-format", choices=["text", "json"], default=None, help="log as text (default) or JSON lines")
    group.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ...")
    group.add_argument("--debug", action="store_true", default=None, help="show tracebacks for every error")


def _load_command(path: str) -> Command:
    module_name, _ = REGISTRY[path]
    module = importlib.import_module(module_name)
    commands = getattr(module, "COMMANDS", None)
    if commands is not None:
        return commands[path]
    command: Command = module.COMMAND
    return command


def add_config_options(parser: argparse.ArgumentParser, model: type) -> None:
    """Add one `--section.field` option per leaf field of `model` (bools get `--no-...` too)."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for leaf in iter_leaf_fields(model):
        section = leaf.path.rsplit(".", 1)[0] if "." in leaf.path else ""
        group = groups.get(section)
        if group is None:
            group = parser.add_argument_group(f"{section} options" if section else "options")
            groups[section] = group
        names = leaf.flags  # with older spellings (e.g. the original's --kd.decoder-factor for --kd.weight)
        kwargs: dict[str, object] = {"dest": "cfg:" + leaf.path, "default": argparse.SUPPRESS,
                                  "help": leaf.help.replace("%", "%%")}
        if leaf.is_bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)  # type: ignore[arg-type]
            continue
        choices = leaf.choices
        metavar = "{" + ",".join(choices) + "}" if choices else leaf.path.rsplit(".", 1)[-1].upper()
        group.add_argument(*names, metavar=metavar, **kwargs)  # type: ignore[arg-type]


def build_parser(path: str, command: Command) -> argparse.ArgumentParser:
    """The parser of one subcommand, options generated from its config model."""
    parser = _Parser(prog=f"cdseg {path}", description=command.description or command.help, epilog=command.epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if command.add_arguments is not None:
        command.add_arguments(parser)
    if command.config is not None:
        add_config_options(parser, command.config)
    _add_global_options(parser)
    return parser


def _top_help() -> str:
    lines = [f"cdseg {__version__}: class-incremental segmentation of aerial images (MiB + contrastive distillation)",
             "", "usage: cdseg <command> [options]   (cdseg <command> --help for its options)", "", "commands:"]
    for path, (_, text) in REGISTRY.items():
        lines.append(f"  {path:<17} {text}")
    lines += ["", f"exit codes: 0 success, 2 bad usage or bad input, {EXIT_RETRYABLE} retryable (storage or network "
              "outage: a job's restart policy retries it), 1 anything else",
              "options are also read from --config YAML and CDSEG_SECTION__FIELD environment variables"]
    return "\n".join(lines)


def _split_command(argv: list[str]) -> tuple[str | None, list[str]]:
    words = [a for a in argv[:2] if not a.startswith("-")]
    if len(words) >= 2 and f"{words[0]} {words[1]}" in REGISTRY and argv[:2] == words[:2]:
        return f"{words[0]} {words[1]}", argv[2:]
    if words and argv[0] == words[0]:
        if words[0] in REGISTRY:
            return words[0], argv[1:]
        group = [p for p in REGISTRY if p.startswith(words[0] + " ")]
        if group:
            sub = argv[1] if len(argv) > 1 else ""
            if sub in ("-h", "--help", ""):
                print(f"usage: cdseg {words[0]} {{{','.join(p.split()[1] for p in group)}}} [options]")
                for p in group:
                    print(f"  {p:<17} {REGISTRY[p][1]}")
                raise SystemExit(0 if sub else 2)
            sys.stderr.write(f"cdseg {words[0]}: error: unknown subcommand {sub!r}; choose one of "
                             f"{', '.join(p.split()[1] for p in group)}\n")
            raise SystemExit(2)
        sys.stderr.write(f"cdseg: error: unknown command {words[0]!r}; run cdseg --help for the list\n")
        raise SystemExit(2)
    return None, argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run `cdseg` with `argv` (default: sys.argv[1:]) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_top_help())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"cdseg {__version__}")
        return 0
    try:
        path, rest = _split_command(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    if path is None:
        sys.stderr.write(f"cdseg: error: expected a command, got {args[0]!r}; run cdseg --help\n")
        return 2
    debug = "--debug" in rest
    try:
        command = _load_command(path)
        parser = build_parser(path, command)
        try:
            ns = parser.parse_args(rest)
        except SystemExit as exc:
            return int(exc.code or 0)
        from cdseg.utils.logging import init_logging

        fmt = ns.log_format or _env("LOG_FORMAT", "text")
        level = (ns.log_level or _env("LOG_LEVEL", "INFO")).upper()
        if fmt not in ("text", "json"):
            raise ConfigError(f"log format {fmt!r} (CDSEG_LOG_FORMAT) is not text or json; use one of those")
        if not isinstance(logging.getLevelName(level), int):
            raise ConfigError(f"log level {level!r} is unknown; use DEBUG, INFO, WARNING or ERROR")
        init_logging("json" if fmt == "json" else "text", level)
        values = {k[4:]: v for k, v in vars(ns).items() if k.startswith("cfg:")}
        config = None
        if command.config is not None:
            from cdseg.config.loader import load_config

            leaves = {leaf.path: leaf for leaf in iter_leaf_fields(command.config)}
            parsed = {k: (v if isinstance(v, bool) else leaves[k].parse_text(v, source=leaves[k].flag)) for k, v in values.items()}
            config = load_config(command.config, config_file=ns.config, cli=parsed)
        return command.invoke(config, ns)
    except TransientError as exc:  # before UserError: a storage outage is a StorageError too
        if debug:
            log.exception("unavailable")
        sys.stderr.write(f"cdseg {path}: error: {exc} (exit {EXIT_RETRYABLE}: retryable)\n")
        return EXIT_RETRYABLE
    except UserError as exc:
        if debug:
            log.exception("bad input")
        sys.stderr.write(f"cdseg {path}: error: {_one_line(exc)}\n")
        return 2
    except KeyboardInterrupt as exc:
        from cdseg.utils.signals import Terminated

        if isinstance(exc, Terminated):
            sys.stderr.write(f"cdseg {path}: {exc}\n")
            return 143  # 128 + SIGTERM, as a shell reports a process ended by it
        sys.stderr.write(f"cdseg {path}: interrupted\n")
        return 130
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            log.exception("cdseg %s failed: %s", path, exc)
            return 1
        # a file's permissions (or a read-only mount) are the user's to fix, wherever they were met
        if debug:
            log.exception("permission denied")
        sys.stderr.write(f"cdseg {path}: error: this user (uid {os.getuid()}) may not access {exc.filename or 'a file'} "
                         f"({exc.strerror}); give it access, or choose paths it can read and write\n")
        return 2
    except Exception as exc:
        log.exception("cdseg %s failed: %s", path, exc)
        return 1


def _one_line(exc: BaseException) -> str:
    """The message of a user error, on one line. A DataLoader worker's error arrives re-raised as
    "Caught DataError in DataLoader worker process 0. Original Traceback ... DataError: <message>":
    its last line is the message."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def _env(name: str, default: str) -> str:
    import os

    return os.environ.get("CDSEG_" + name, default)
