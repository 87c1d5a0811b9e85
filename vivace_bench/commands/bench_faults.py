"""`vivace bench faults`: SIGKILL a pipeline run at a random point, resume it, count what ran twice.

Starts one vLLM server on loopback from the embedded model (or uses
``--base-url``), so the trials' CLI processes do not each start an engine.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace_bench import write_report

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("faults", parents=[parents.common, parents.json],
                       help="SIGKILL pipeline runs at random points and resume them: what ran twice, what was lost")
    p.add_argument("--trials", type=int, default=20, metavar="N", help="kill-and-resume trials (default 20)")
    p.add_argument("--pipeline", default="research", metavar="NAME", help="a registered pipeline or a .toml file")
    p.add_argument("--max-tokens", type=int, default=96, metavar="N", help="every call's cap (default 96)")
    p.add_argument("--seed", type=int, default=0, help="the kill points' seed (default 0)")
    p.add_argument("--base-url", metavar="URL", help="a vLLM server to use instead of starting one")
    p.add_argument("--out", default="runs/bench-faults", metavar="DIR", help="where report.json goes")
    p.set_defaults(handler=cmd_bench_faults)


async def cmd_bench_faults(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace.agents.driver import resolve
    from vivace.errors import InputError
    from vivace_bench.backend_bench import machine_info
    from vivace_bench.fault_bench import run_trials
    from vivace.runtime.local_server import LocalServers, ServerOptions
    from vivace.runtime.models import EMBEDDED, prepare

    if args.trials < 1:
        raise InputError("--trials must be at least 1")
    resolve(args.pipeline)  # an unknown pipeline fails before a server starts
    err = Console(stderr=True, highlight=False)
    out = Path(args.out)
    servers = None
    url = args.base_url
    if url is None:
        servers = LocalServers(ServerOptions(str(prepare(EMBEDDED, config.home)), dev_mode=False), 1, out / "server")
        with err.status("starting a vLLM server on 127.0.0.1..."):
            (url,) = await servers.start()
    report: dict[str, Any] = {"machine": machine_info()}

    def progress(row: dict[str, Any]) -> None:
        how = (f"resumed: {row.get('status')}, {row.get('resumed_steps', 0)} step(s) from the checkpoint, "
               f"{row.get('rerun_steps', 0)} run again" if row["resumed"] else row.get("error") or
               f"finished before the kill ({row.get('status')})")
        err.print(f"  trial {row['trial'] + 1}: killed at {row['kill_at_s']:.1f} s; {how}")

    try:
        report.update(await run_trials(url, args.trials, pipeline=args.pipeline, max_tokens=args.max_tokens,
                                       seed=args.seed, progress=progress))
    finally:
        if servers is not None:
            await servers.aclose()
    write_report(out, report)
    if args.json:
        emit_json(report)
        return 0
    resumed = sum(r["resumed"] for r in report["rows"])
    err.print(f"{report['resumed_ok']}/{resumed} resumed runs ended done ({report['killed']} of {report['trials']} "
              f"killed mid-run, {report['finished_before_kill_point']} redrawn: done before the kill); finished steps run again: {report['rerun_steps']} ({report['rerun_calls']} calls); "
              f"complete final records: {report['complete_records']}/{resumed}; report: {out / 'report.json'}")
    return 0
