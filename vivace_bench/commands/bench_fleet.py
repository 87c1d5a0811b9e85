"""`vivace bench fleet`: prefix affinity vs spreading across real servers, and a server lost mid-run.

The measuring is ``vivace_bench.fleet_bench.run_bench``. With ``--base-url``
(two or more) it measures the user's own servers and kills none; without, it
starts ``--servers`` vLLM servers of the configured local model on loopback
and, for the failover, kills one of them. ``--vllm-router [POLICY ...]`` adds
an arm per policy: vLLM's own router (``vivace.runtime.vllm_router``) started
on loopback in front of the same servers, so the comparison runs in one process
on the same engines with the same budget.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from vivace.commands._io import Parents, Subparsers, emit_json
from vivace.config import Config
from vivace.errors import InputError
from vivace_bench import write_report

log = logging.getLogger(__name__)


def register(sub: Subparsers, parents: Parents) -> None:
    p = sub.add_parser("fleet", parents=parents.calls_model(),
                       help="prefix affinity vs spreading on real servers: cached tokens, latency, a killed server")
    p.add_argument("--servers", type=int, default=2, metavar="N",
                   help="local vLLM servers to start when no --base-url is given (default 2)")
    p.add_argument("--questions", metavar="FILE.jsonl", help='lines of {"id", "question"} (default: the bundled SoT set)')
    p.add_argument("--limit", type=int, default=8, metavar="N", help="questions to run (default 8; round-robin over categories)")
    p.add_argument("--max-points", type=int, default=None, help="SoT point cap (config sot_max_points)")
    p.add_argument("--failover-runs", type=int, default=4, metavar="N",
                   help="runs in flight when a server is killed (default 4; 0 skips the failover)")
    p.add_argument("--vllm-router", nargs="*", metavar="POLICY", default=None,
                   help="also route the same runs through vLLM's router (pip install vllm-router), one arm per "
                        "policy: cache_aware (the default when none is named), round_robin, power_of_two, ...")
    p.add_argument("--out", default="runs/bench-fleet", metavar="DIR", help="where report.json and the server logs go")
    p.set_defaults(handler=cmd_bench_fleet)


async def cmd_bench_fleet(args: argparse.Namespace, config: Config) -> int:
    from rich.console import Console

    from vivace_bench.fleet_bench import ARMS, run_bench
    from vivace_bench.sot_bench import load_questions, select
    from vivace.runtime.vllm_router import POLICIES, router_binary

    questions = select(load_questions(args.questions), None, args.limit)
    max_tokens = args.max_tokens if args.max_tokens is not None else 192
    max_points = args.max_points if args.max_points is not None else config.sot_max_points
    if max_tokens < 16 or max_points < 2 or args.failover_runs < 0:
        raise InputError("--max-tokens must be at least 16, --max-points at least 2, --failover-runs at least 0")
    own = bool(args.base_url)
    if own and len(config.base_urls) < 2:
        raise InputError("a fleet bench needs at least two --base-url")
    if not own and not 2 <= args.servers <= 8:
        raise InputError("--servers must be between 2 and 8")
    policies = tuple(dict.fromkeys(args.vllm_router or ["cache_aware"])) if args.vllm_router is not None else ()
    if any(p not in POLICIES for p in policies):
        raise InputError(f"--vllm-router policies are {', '.join(POLICIES)}")
    if policies:
        router_binary()  # not installed: one line before any server starts
    out = Path(args.out)
    err = Console(stderr=True)
    model = config.served_model_name or (None if own else "smollm2-135m")
    servers = None
    routers: dict[str, Any] = {}
    try:
        if own:
            urls = list(config.base_urls)
        else:
            servers = _local_servers(config, args.servers, out / "servers", routed=bool(policies))
            with err.status(f"starting {args.servers} vLLM servers on 127.0.0.1 (logs in {servers.log_dir})..."):
                urls = await servers.start()
        if policies:
            with err.status(f"starting vllm-router ({', '.join(policies)}) on 127.0.0.1..."):
                routers = await _start_routers(urls, policies, out / "servers")
            tokens = await _servers_render(urls, model)  # before the failover kills one
        connect, served = _arm_openers(config, urls, model, routers)
        arms = [*ARMS, *routers]

        def progress(row: dict[str, Any]) -> None:
            err.print(f"  {row['id'][:16]:<16} " + " | ".join(
                f"{arm} {row[arm]['latency_s']:5.2f} s {_pct(row[arm]['cached_share'])} cached" for arm in arms)
                + f" | agree {_pct(row['answer_similarity']).strip()}", highlight=False)

        err.print(f"{len(questions)} questions x ({', '.join(arms)}) on {len(urls)} servers, max {max_tokens} tokens",
                  highlight=False)
        report = await run_bench(
            connect, urls, questions, max_tokens=max_tokens, max_points=max_points,
            repetition_penalty=config.repetition_penalty,
            kill=servers.kill if servers is not None and args.failover_runs else None,
            failover_runs=args.failover_runs, router_policies=policies, served=served, progress=progress)
        if routers:  # the routers' own counts: requests per server, prefix-routing outcomes
            report["vllm_router"] = {arm: {"policy": r.policy, "url": r.url, "workers_render_prompts": tokens,
                                           **await r.counters()}
                                     for arm, r in routers.items()}
    finally:
        for router in routers.values():
            await router.aclose()
        if servers is not None:
            await servers.aclose()
    report["config"].update(started_locally=not own, model=config.model if not own else config.served_model_name)
    path = write_report(out, report)
    if args.json:
        emit_json({"report": str(path), "summary": report["summary"], "failover": report.get("failover"),
                   "vllm_router": report.get("vllm_router")})
        return 0
    print_table(report)
    Console().print(f"report: {path}", highlight=False)
    return 0


def _local_servers(config: Config, n: int, log_dir: Path, routed: bool = False) -> Any:
    """``n`` local servers; ``routed``: with the endpoint vllm-router's cache-aware policy tokenizes through."""
    from vivace.runtime.local_server import LocalServers, ServerOptions
    from vivace.runtime.models import resolve
    from vivace.runtime.vllm_router import RoutedServerOptions

    model = resolve(config.model, config.home)
    if not Path(model).is_dir():
        raise InputError(f"local servers need a local model folder; {config.model!r} is not one (or pass --base-url)")
    kind = RoutedServerOptions if routed else ServerOptions
    options = kind(model, max_model_len=config.max_model_len or 2048, dtype=config.dtype,
                   kv_cache_space_gib=config.kv_cache_space_gib)
    return LocalServers(options, n, log_dir)


async def _start_routers(urls: list[str], policies: tuple[str, ...], log_dir: Path) -> dict[str, Any]:
    """One vllm-router per policy in front of ``urls``, by arm name; a failure stops those already up."""
    from vivace_bench.fleet_bench import router_arm
    from vivace.runtime.vllm_router import VLLMRouter

    routers: dict[str, Any] = {}
    try:
        for policy in policies:
            router = VLLMRouter(urls, policy, log_file=log_dir / f"vllm-router-{policy}.log")
            await router.start()
            routers[router_arm(policy)] = router
    except BaseException:
        for router in routers.values():
            await router.aclose()
        raise
    return routers


def _arm_openers(config: Config, urls: list[str], model: str | None, routers: dict[str, Any]) -> tuple[Any, Any]:
    """``connect(arm)`` and ``served(arm, backend)`` for the bench: vivace's fleet over ``urls``, or a router."""
    from vivace.runtime.openai_http import OpenAIBackend, server_root

    async def connect(arm: str) -> Any:
        router = routers.get(arm)
        return await OpenAIBackend.connect(
            [router.url] if router else urls, model, api_key_env=config.api_key_env, timeout_s=config.request_timeout_s,
            retries=config.connect_retries, dialect=config.openai_dialect, prefix_affinity=arm == "affinity")

    async def served(arm: str, backend: Any) -> dict[str, int]:
        router = routers.get(arm)
        if router is None:
            return dict(backend.served)
        per_worker = (await router.counters())["per_worker"]  # where the router sent each request
        return {u: int(per_worker.get(server_root(u), 0)) for u in urls}

    return connect, served


async def _servers_render(urls: list[str], model: str | None) -> bool:
    """Whether every server gives vllm-router prompt tokens; without, its cache-aware policy matches nothing."""
    from vivace.runtime.vllm_router import renders

    tokens = all([await renders(u, model) for u in urls])
    if not tokens:
        log.warning("the servers do not render prompts for vllm-router (start vLLM with --enable-scale-out); its "
                    "cache-aware policy will see no tokens and send every request to the least-loaded server")
    return tokens


def _pct(v: float | None) -> str:
    return "   -" if v is None else f"{v * 100:3.0f}%"


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["summary"]
    cfg = report["config"]
    table = Table(title=f"fleet bench: {len(report['servers'])} servers, SoT runs, greedy, max {cfg['max_tokens']} tokens")
    arms = cfg.get("arms", ("affinity", "spread"))
    for col in ("routing", "runs", "median s", "p95 s", "prompt tok", "cached", "servers/run"):
        table.add_column(col, justify="left" if col == "routing" else "right", no_wrap=col == "routing",
                         min_width=max(map(len, arms)) if col == "routing" else None)
    for arm in arms:
        a = s[arm]
        table.add_row(arm, str(a["runs"]), f"{a['latency_median_s']:.2f}" if a["latency_median_s"] else "-",
                      f"{a['latency_p95_s']:.2f}" if a["latency_p95_s"] else "-", str(a["prompt_tokens"]),
                      _pct(a["cached_share"]), str(a["servers_used_median"]))
    console = Console()
    console.print(table)
    speedup = s["speedup_affinity_median"]
    console.print(f"affinity vs spread: x{speedup:.2f} median latency ratio; answers agree "
                  f"{_pct(s['answer_similarity_median']).strip()} (median word-level similarity), identical in "
                  f"{_pct(s['same_answer_share']).strip()} of questions"
                  f"{'' if report['cache_reset_per_run'] else ' (prefix caches could not be reset between runs)'}"
                  if speedup else "no runs", highlight=False)
    for arm, v in s.get("versus_affinity", {}).items():
        if arm in report.get("vllm_router", {}) and v["latency_ratio_median"]:
            console.print(f"{arm} vs affinity: x{v['latency_ratio_median']:.2f} median latency ratio (above 1: "
                          f"affinity faster); answers agree {_pct(v['answer_similarity_median']).strip()}",
                          highlight=False)
    if any(not r["workers_render_prompts"] for r in report.get("vllm_router", {}).values()):
        console.print("the servers do not render prompts for vllm-router (start vLLM with --enable-scale-out): "
                      "its cache-aware policy saw no tokens", highlight=False)
    f = report.get("failover")
    if f:
        console.print(f"failover: killed {f['killed'] or 'nothing (runs ended first)'} with {f['in_flight_on_killed']} "
                      f"calls in flight; {f['runs_ok']}/{f['runs']} runs finished, {f['unfinished_calls']} calls "
                      f"unfinished, {f['resumed_answers']} answers resumed elsewhere, in {f['wall_s']:.1f} s "
                  f"({f['unfailed_wall_s']:.1f} s with no failure); answers agree "
                  f"{_pct(f['answer_similarity_to_unfailed_median']).strip()} with the same batch unfailed",
                      highlight=False)
