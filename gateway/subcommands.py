"""The arguments of the retraining loop's subcommands: ``eval``, ``drift``, ``experiment``, ``rollout``,
``promote``, ``rollback``, ``dataset``, ``lineage`` and ``demo``.

Their handlers live in ``eval_cli.py``, ``drift_cli.py``, ``deploy_cli.py``, ``dataset_cli.py`` and ``demo.py``,
each imported only when its subcommand runs: ``turnout serve`` (and ``--help``) loads none of them.

Usage: ``add_parsers(subparsers)`` from ``gateway.cli.parser``.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.progress import add_quiet


def _eval(args: argparse.Namespace) -> int:
    from gateway import eval_cli

    handlers = {"run": eval_cli.run, "compare": eval_cli.compare, "list": eval_cli.list_command}
    return handlers[args.eval_command](args)


def _drift(args: argparse.Namespace) -> int:
    from gateway.drift_cli import drift

    return drift(args)


def _deploy(args: argparse.Namespace) -> int:
    from gateway import deploy_cli

    handlers = {
        "experiment": deploy_cli.report,
        "rollout": deploy_cli.rollout,
        "promote": deploy_cli.promote,
        "rollback": deploy_cli.rollback,
    }
    return handlers[args.command](args)


def _dataset(args: argparse.Namespace) -> int:
    from gateway import dataset_cli

    return (dataset_cli.lineage if args.command == "lineage" else dataset_cli.dataset)(args)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import demo

    return demo(args)


def add_parsers(sub: Any) -> None:
    """Add the loop's subcommands to the top-level ones, in the order ``turnout --help`` lists them."""
    _add_eval(sub)
    _add_drift(sub)
    _add_deploy(sub)
    _add_dataset(sub)
    p = sub.add_parser("demo", help="run the whole retraining loop on this machine (no keys, no network)")
    p.add_argument("--dir", default="turnout-demo", help="where its files go (default: ./turnout-demo)")
    p.add_argument("--fast", action="store_true", help="fewer users and shorter steps (under a minute)")
    p.set_defaults(run=_demo)


def _add_eval(sub: Any) -> None:
    top = sub.add_parser("eval", help="run, compare and list eval suites")
    cmds = top.add_subparsers(dest="eval_command", required=True)
    for name, helptext in (
        ("run", "run a suite against an upstream or a route's variants (exit 1 below the threshold)"),
        ("compare", "paired comparison of two upstreams (exit 0 only when the candidate is not worse)"),
    ):
        p = cmds.add_parser(name, help=helptext)
        p.add_argument("suite", help="suite file (YAML)")
        p.add_argument("-c", "--config", default="turnout.yaml", help="config file (upstreams, store)")
        p.add_argument("--json", metavar="F", help="also write the results as JSON to F (- for stdout)")
        p.add_argument("--concurrency", type=int, default=16, help="cases in flight per upstream (default: 16)")
        p.add_argument("--no-store", action="store_true", help="do not store the run")
        add_quiet(p)
        p.set_defaults(run=_eval)
        if name == "run":
            target = p.add_mutually_exclusive_group(required=True)
            target.add_argument("--upstream", help="the upstream to evaluate")
            target.add_argument("--route", help="evaluate every serving variant and shadow of this route")
        else:
            p.add_argument("--baseline", required=True, help="the upstream serving now")
            p.add_argument("--candidate", required=True, help="the upstream that must not be worse")
            p.add_argument(
                "--confidence", type=float, default=0.95, help="confidence of the 'worse' decision (default: 0.95)"
            )
    p = cmds.add_parser("list", help="stored eval runs, newest first")
    p.add_argument("-c", "--config", default="turnout.yaml", help="config file naming the store")
    p.add_argument("--suite", help="only this suite")
    p.add_argument("--upstream", help="only this upstream")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default: 50)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_eval)


def _add_drift(sub: Any) -> None:
    p = sub.add_parser("drift", help="input and output drift of a route; the models the upstreams report")
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("check", "run a route's drift check now and print it"),
                         ("report", "print a route's latest stored drift check")):  # fmt: skip
        a = actions.add_parser(action, help=text)
        a.add_argument("route", help="route name")
        a.add_argument("-c", "--config", default="turnout.yaml", help="config file naming the store")
        a.add_argument("--json", help="also write the check as JSON to this file")
        a.set_defaults(run=_drift)
    a = actions.add_parser("models", help="the model and fingerprint each upstream answers with")
    a.add_argument("-c", "--config", default="turnout.yaml", help="config file naming the store")
    a.set_defaults(run=_drift)


def _add_deploy(sub: Any) -> None:
    p = sub.add_parser("experiment", help="A/B analysis of a route's split")
    ex = p.add_subparsers(dest="experiment_command", required=True)
    r = ex.add_parser("report", help="per-variant figures, always-valid intervals, the decision")
    r.add_argument("route")
    r.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
    r.add_argument("--json", help="also write the report as JSON to this file")
    r.add_argument("--html", help="also write a self-contained HTML page to this file")
    r.add_argument("--client", metavar="NAME", help="only the interactions of this named client (auth.clients)")
    add_quiet(r)
    r.set_defaults(run=_deploy)
    p = sub.add_parser("rollout", help="a route's guarded rollout: status, start, approve, pause, abort")
    p.add_argument("action", choices=("status", "start", "approve", "pause", "abort"))
    p.add_argument("route")
    p.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
    p.add_argument("--actor", help="who acts, for the audit trail (default: the login name)")
    p.add_argument("--reason", help="why, for the audit trail")
    p.add_argument("--history", type=int, default=10, help="audit rows shown (default: 10)")
    p.set_defaults(run=_deploy)
    for name, text in (("promote", "send every user to VARIANT"),
                       ("rollback", "send every user to analysis.control")):  # fmt: skip
        p = sub.add_parser(name, help=f"{text}: rewrite the config file (comments kept) and end any rollout")
        p.add_argument("route")
        if name == "promote":
            p.add_argument("variant")
        p.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
        p.add_argument("--actor", help="who acts, for the audit trail (default: the login name)")
        p.set_defaults(run=_deploy)


def _add_dataset(sub: Any) -> None:
    p = sub.add_parser("dataset", help="versioned training datasets: build, list, show, diff, export")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser(
        "build", help="write the next version of a configured dataset (nothing when nothing changed)"
    )
    a.add_argument("name")
    a.add_argument("--dry-run", action="store_true", help="say what would be written, write nothing")
    a.add_argument("--json", action="store_true", help="print the result (version, counts, sha256, path) as JSON")
    add_quiet(a)
    a = actions.add_parser("list", help="the versions of a dataset (default: every dataset)")
    a.add_argument("name", nargs="?")
    a = actions.add_parser("show", help="a version's manifest")
    a.add_argument("ref", help="NAME@vN")
    a.add_argument("--ids", action="store_true", help="list the interaction ids too")
    a = actions.add_parser("diff", help="examples added, removed and changed between two versions, with statistics")
    a.add_argument("a", help="NAME@vN (the older)")
    a.add_argument("b", help="NAME@vN (the newer)")
    a.add_argument("--json", help="also write the whole difference as JSON to this file")
    a = actions.add_parser("export", help="copy a version's train.jsonl (checked against its sha256)")
    a.add_argument("ref", help="NAME@vN")
    a.add_argument("-o", "--output", help="output file (default: standard output)")
    for parser in actions.choices.values():
        parser.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
    p.set_defaults(run=_dataset)
    p = sub.add_parser("lineage", help="the dataset version an upstream was trained on, and its parents")
    p.add_argument("upstream")
    p.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
    p.set_defaults(run=_dataset)
