"""`auditor audit | accept | demo | report | diff`. Exit codes: 0 fine, 2 bad config or input, 3 findings at
--fail-on (less those the --baseline accepts)."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import re
import sys
import traceback
from pathlib import Path

from auditor.baseline import accepted_findings
from auditor.errors import AuditorError, os_error_text

log = logging.getLogger("auditor")

EXIT_OK, EXIT_BAD_INPUT, EXIT_FINDINGS = 0, 2, 3


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": self.formatTime(record), "level": record.levelname, "message": record.getMessage()})


class _LogFile(logging.FileHandler):
    """The run's audit.log. A line that cannot be written (a full disk) is dropped without logging's traceback:
    the write that fails next says what happened."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def setup_logging(json_logs: bool = False, debug: bool = False, log_file: Path | None = None) -> None:
    """Human lines (or JSON lines) on stderr, and the same in the run directory's audit.log."""
    log.handlers.clear()
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(_JsonFormatter() if json_logs else logging.Formatter("auditor: %(message)s"))
    log.addHandler(stream)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFile(log_file, errors="backslashreplace")  # any file name can be logged
        file_handler.setFormatter(_JsonFormatter())
        log.addHandler(file_handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditor", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--log-json", action="store_true", help="log JSON lines instead of text")
    commands = parser.add_subparsers(dest="command", required=True)

    audit = commands.add_parser("audit", help="audit a model on a labeled image set",
                                description="Any config key can be set as --section.key VALUE or --set section.key=VALUE.")
    audit.add_argument("--config", help="a YAML file, e.g. configs/imagefolder.yaml")
    audit.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    audit.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: the best available)")
    audit.add_argument("--out", help="the run directory (run.out_dir)")
    audit.add_argument("--fail-on", choices=("high", "medium", "low", "never"), help="exit 3 on such findings")
    audit.add_argument("--baseline", metavar="FILE",
                       help="accepted findings (auditor accept writes it): --fail-on counts only the others")
    audit.add_argument("--trust-checkpoint", action="store_true",
                       help="allow a pickled full-model checkpoint (unpickling runs code from the file)")

    demo = commands.add_parser("demo", help="train a small CNN on planted-bias digits and audit it (no downloads)")
    demo.add_argument("--out", default="reports/demo", help="where the demo's data, model and run go")
    demo.add_argument("--fail-on", choices=("high", "medium", "low", "never"), default="never")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--rename", action="append", default=[], metavar="DIGIT=NAME",
                      help="give a digit class another name, e.g. 8=eight")

    accept = commands.add_parser("accept", help="accept findings of a run, so --fail-on with --baseline skips them",
                                 description="Append findings to a baseline file, matched later by kind, classes "
                                             "and region (not by number).")
    accept.add_argument("run_dir")
    accept.add_argument("ids", nargs="+", metavar="ID", help="finding ids, e.g. F003")
    accept.add_argument("--baseline", default="accepted.json", help="the baseline file (default: accepted.json)")
    accept.add_argument("--reason", default="", help="why they are accepted, kept in the baseline")

    report = commands.add_parser("report", help="re-render report.html from a run directory (no model needed)")
    report.add_argument("run_dir")

    diff = commands.add_parser("diff", help="what changed between two audits of the same data")
    diff.add_argument("run_a")
    diff.add_argument("run_b")
    diff.add_argument("--out", help="folder for diff.html and diff.json (default: RUN_B/diff)")
    return parser


def _dotted_overrides(extra: list[str]) -> list[str]:
    """Turn `--section.key value` and `--section.key=value` into `section.key=value`."""
    overrides, i = [], 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise AuditorError(f"Unknown argument {arg!r}. Config keys are set as --section.key VALUE.")
        if "=" in arg:
            overrides.append(arg[2:])
            i += 1
        elif i + 1 < len(extra):
            overrides.append(f"{arg[2:]}={extra[i + 1]}")
            i += 2
        else:
            raise AuditorError(f"{arg} needs a value.")
    return overrides


def exit_code_for(run_dir: Path, fail_on: str) -> int:
    """3 when a finding at or above `fail_on` exists in the run directory that its baseline does not accept,
    else 0."""
    if fail_on == "never":
        return EXIT_OK
    path = Path(run_dir) / "findings.json"
    findings = json.loads(path.read_text())["findings"] if path.is_file() else []
    from auditor.findings.record import SEVERITIES  # noqa: PLC0415 - the findings package loads the rules' libraries

    gate = SEVERITIES[: SEVERITIES.index(fail_on) + 1]
    accepted = accepted_findings(run_dir)
    hits = [f for f in findings if f["severity"] in gate]
    new = [f for f in hits if f.get("id") not in accepted]
    if new:
        log.warning("%d finding(s) at or above %s%s: exit %d", len(new), fail_on,
                    f" besides {len(hits) - len(new)} accepted" if len(hits) > len(new) else "", EXIT_FINDINGS)
        return EXIT_FINDINGS
    if hits:
        log.info("%d finding(s) at or above %s, all accepted by the baseline", len(hits), fail_on)
    return EXIT_OK


def error_paragraph(err: AuditorError) -> str:
    """The message as one paragraph: library messages may span lines, and an error raised in a DataLoader worker
    arrives with the worker's traceback inside its message (shown with --debug only)."""
    text = str(err)
    if "Original Traceback" in text:
        text = re.split(r"^\S+Error: ", text, flags=re.M)[-1]
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    # Arrow's default allocator keeps freed memory; the system one gives it back, so peak memory stays flat
    # however many records a run writes.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    setup_logging(args.log_json, args.debug)
    try:
        if extra and args.command != "audit":
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return _dispatch(args, extra)
    except AuditorError as err:
        if args.debug:
            traceback.print_exc()
        print(f"auditor: error: {error_paragraph(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # outside an audit's run folder (which names its own): report, diff, demo
        if args.debug:
            traceback.print_exc()
        print(f"auditor: error: {os_error_text(err)}. Fix the path or its permissions, or free disk space, then run "
              "the same command again.", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("auditor: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    finally:
        if argv is None:  # the command itself, about to exit (the tests and other callers pass argv)
            # Python's exit would run the cyclic collector over every object torch, torchvision and pandas made
            # (1 to 2 s on a busy 2-CPU machine) only to free memory the process hands back anyway: out of its way.
            gc.freeze()


def _dispatch(args: argparse.Namespace, extra: list[str]) -> int:
    from auditor.config import load_config  # noqa: PLC0415 - keep `auditor --help` fast

    if args.command == "audit":
        overrides = [*args.set, *_dotted_overrides(extra)]
        if args.device:
            overrides.append(f"sweep.device={args.device}")
        if args.out:
            overrides.append(f"run.out_dir={args.out}")
        if args.fail_on:
            overrides.append(f"run.fail_on={args.fail_on}")
        if args.baseline:
            overrides.append(f"run.baseline={args.baseline}")
        if args.trust_checkpoint:
            overrides.append("model.trust_checkpoint=true")
        cfg = load_config(args.config, overrides)
        # torch, torchvision and pandas make some 400,000 objects as they load, none of them garbage, and the cyclic
        # collector would walk them again and again while they come: half a second of start-up at 2 CPUs.
        gc.disable()
        try:
            from auditor.pipeline import run_audit  # noqa: PLC0415
            from auditor.outdir import claimed  # noqa: PLC0415
        finally:
            gc.enable()

        with claimed(cfg.run.out_dir, cfg.data) as run_folder:  # before audit.log: the folder is ours, ours alone
            setup_logging(args.log_json, args.debug, run_folder / "audit.log" if run_folder else None)
            run_dir = run_audit(cfg)
        if run_dir is None:  # a rank > 0 of a torchrun launch: rank 0 writes the run directory
            return EXIT_OK
        log.info("report: %s", run_dir / "report.html")
        return exit_code_for(run_dir, cfg.run.fail_on)
    if args.command == "demo":
        from auditor.demo import run_demo  # noqa: PLC0415

        digits = [str(c) for c in range(10)]
        names = list(digits)
        for item in args.rename:
            digit, sep, name = item.partition("=")
            if not sep or digit not in digits or not name or "/" in name:
                raise AuditorError(f"--rename {item!r} must look like DIGIT=NAME with a digit 0-9 and a name without '/'.")
            names[int(digit)] = name
        run_dir = run_demo(Path(args.out), seed=args.seed, class_names=names)
        log.info("report: %s", run_dir / "report.html")
        return exit_code_for(run_dir, args.fail_on)
    if args.command == "accept":
        from auditor.baseline import accept  # noqa: PLC0415
        from auditor.report import render_report  # noqa: PLC0415

        added = accept(Path(args.run_dir), args.ids, Path(args.baseline), args.reason)
        log.info("baseline %s: %d finding(s) added", args.baseline, len(added))
        if (Path(args.run_dir) / "report.html").is_file():
            render_report(Path(args.run_dir))  # the report marks them accepted
        return EXIT_OK
    if args.command == "report":
        from auditor.report import render_report  # noqa: PLC0415

        path = render_report(Path(args.run_dir))
        log.info("report: %s", path)
        return EXIT_OK
    if args.command == "diff":
        from auditor.report.diff import diff_runs  # noqa: PLC0415

        out = Path(args.out) if args.out else Path(args.run_b) / "diff"
        html_path, json_path = diff_runs(Path(args.run_a), Path(args.run_b), out)
        log.info("diff: %s and %s", html_path, json_path)
        return EXIT_OK
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
