"""The key tables of each bench's report.json, as plain rows for the HTML and Markdown pages.

One function per bench; an unknown bench (a plug-in's) still gets its
top-level and summary figures, so nothing a bench wrote is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ORDER = ("backend", "overhead", "sot", "context", "quant", "load", "pipeline", "tools", "safety", "faults")


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


def fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format(value, spec) if isinstance(value, float) else str(value)
    return str(value)


def _scalars(title: str, data: dict[str, Any]) -> Table | None:
    rows = [[k, fmt(v)] for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None]
    return Table(title, ["figure", "value"], rows) if rows else None


def _targets(data: Any) -> list[Table]:
    if not isinstance(data, dict) or not data:
        return []
    return [Table("targets", ["target", "met"], [[k, fmt(v)] for k, v in data.items()])]


def backend(data: dict[str, Any]) -> list[Table]:
    rows = [
        [fmt(r.get("concurrency")), fmt(r.get("tok_s"), ".1f"), fmt(r.get("ttft_median_s"), ".3f"),
         fmt(r.get("per_stream_decode_tok_s"), ".1f"), fmt(r.get("speedup_vs_1"), ".2f")]
        for r in data.get("levels", [])
    ]
    head = f"{data.get('backend', '?')}:{data.get('model', '?')}, load {fmt(data.get('load_s'), '.1f')} s"
    return [Table(f"throughput by concurrency ({head})", ["concurrent", "tok/s", "TTFT s", "per-stream tok/s", "× vs 1"], rows)]


def overhead(data: dict[str, Any]) -> list[Table]:
    summary = data.get("summary", {})
    tables = [t for t in [_scalars("vivace's own cost (zero-latency backend)", summary),
                          _scalars("checkpoints: cost per step (SQLite)", data.get("checkpoints") or {})] if t]
    if db := data.get("checkpoint_database"):
        tables.append(Table(f"checkpoint database size (keep_runs {db.get('keep_runs')})", ["runs", "kept", "MB"],
                            [[fmt(p["runs"]), fmt(p["kept"]), fmt(p["bytes"] / 1e6, ".1f")] for p in db.get("series", [])]))
    return tables + _targets(summary.get("targets"))


def faults(data: dict[str, Any]) -> list[Table]:
    keys = ("pipeline", "trials", "killed", "resumed_ok", "complete_records", "rerun_steps", "rerun_calls",
            "finished_before_kill_point", "calibrated_run_s", "kill_at_s_median", "resume_s_median")
    rows = [[r["trial"] + 1, fmt(r["kill_at_s"], ".1f"), fmt(r.get("status_after_kill")), fmt(r.get("finished_before_kill")),
             fmt(r.get("resumed_steps")), fmt(r.get("rerun_steps")), fmt(r.get("status"))] for r in data.get("rows", [])]
    return [t for t in [_scalars("SIGKILL at a random point, then resume", {k: data.get(k) for k in keys})] if t] + [
        Table("trials", ["trial", "killed at s", "after kill", "steps done", "resumed", "run again", "resumed run"],
              [[fmt(c) for c in row] for row in rows])]


def sot(data: dict[str, Any]) -> list[Table]:
    s = data.get("summary") or {}
    cols = ["questions", "n", "SoT speedup (median)", "auto speedup", "length ratio SoT/normal", "fallbacks"]
    rows = []
    for label, group in (("SoT-suited", s.get("suited") or {}), ("all", s.get("overall") or {})):
        rows.append([label, fmt(group.get("n")), fmt(group.get("speedup_sot_median"), ".2f"), fmt(group.get("speedup_auto_median"), ".2f"),
                     fmt(group.get("length_ratio_median"), ".2f"), fmt(group.get("fallbacks"))])
    tables = [Table("Skeleton-of-Thought vs normal decoding", cols, rows)]
    suited = s.get("suited") or {}
    arms = [[label, fmt(suited.get(f"{arm}_speedup_median"), ".2f"), fmt(suited.get(f"{arm}_vs_sot_median"), ".2f"),
             fmt(suited.get(f"{arm}_length_ratio_median"), ".2f"), fmt(suited.get(f"{arm}_coverage_median"), ".2f")]
            for arm, label in (("pipelined", "pipelined SoT"), ("unplanned", "SoT without the length plan"))
            if suited.get(f"{arm}_speedup_median") is not None]
    arms.insert(0, ["SoT", fmt(suited.get("speedup_sot_median"), ".2f"), "1.00", fmt(suited.get("length_ratio_median"), ".2f"),
                    fmt(suited.get("coverage_median"), ".2f")])
    if suited.get("reference_coverage_median") is not None:  # what two normal answers share: coverage's ceiling
        arms.append(["normal under another system prompt (reference)", "-", "-",
                     fmt(suited.get("reference_length_ratio_median"), ".2f"), fmt(suited.get("reference_coverage_median"), ".2f")])
    tables.append(Table("SoT-suited questions by arm (medians)", ["arm", "× normal", "× SoT", "length ratio", "coverage of normal"], arms))
    by_cat = s.get("by_category") or {}
    if by_cat:
        tables.append(Table("per category", ["category", "n", "SoT speedup", "length ratio", "routed to SoT"],
                            [[c, fmt(g.get("n")), fmt(g.get("speedup_sot_median"), ".2f"), fmt(g.get("length_ratio_median"), ".2f"),
                              fmt(g.get("routed_sot"))] for c, g in by_cat.items()]))
    return tables + _targets(s.get("targets"))


def context(data: dict[str, Any]) -> list[Table]:
    methods = data.get("methods") or {}
    cols = ["method", "prompt tokens", "TTFT s", "latency s", "overhead s", "accuracy", "gold kept", "n"]
    rows = [[m, fmt(v.get("prompt_tokens_mean"), ".0f"), fmt(v.get("ttft_median_s"), ".2f"), fmt(v.get("latency_median_s"), ".2f"),
             fmt(v.get("overhead_median_s"), ".2f"), fmt(v.get("accuracy"), ".2f"), fmt(v.get("gold_kept_rate"), ".2f"), fmt(v.get("n"))]
            for m, v in methods.items()]
    return [Table("long-context QA by method (medians)", cols, rows)] + _targets(data.get("targets"))


def quant(data: dict[str, Any]) -> list[Table]:
    cols = ["config", "weights", "KV", "perplexity", "Δppl %", "MC acc", "KV tokens", "decode tok/s", "16-way tok/s", "load s", "status"]
    rows = []
    for r in data.get("configs", []):
        status = r.get("status", "?") if r.get("status") == "ok" else f"{r.get('status')}: {r.get('reason')}"
        rows.append([r.get("name", "?"), fmt(r.get("weights")), fmt(r.get("kv")), fmt(r.get("perplexity"), ".3f"), fmt(r.get("ppl_delta_pct"), "+.2f"),
                     fmt(r.get("mc_accuracy"), ".3f"), fmt(r.get("kv_capacity_tokens")), fmt(r.get("decode_tok_s"), ".1f"),
                     fmt(r.get("batch16_tok_s"), ".1f"), fmt(r.get("load_s"), ".1f"), status])
    tables = [Table(f"quantization configs (KV budget {fmt(data.get('kv_space_gib'))} GiB, {fmt(data.get('text_tokens'))} text tokens)", cols, rows)]
    study = data.get("fake_quant") or []
    if study:
        tables.append(Table("torch fake-quant study (round-to-nearest)", ["config", "tensor", "bits", "granularity", "perplexity", "Δppl %"],
                            [[r.get("name", "?"), fmt(r.get("tensor")), fmt(r.get("bits")), fmt(r.get("granularity")),
                              fmt(r.get("perplexity"), ".3f"), fmt(r.get("ppl_delta_pct"), "+.2f")] for r in study]))
    versus = data.get("engine_vs_emulation") or []
    if versus:
        tables.append(Table("engine vs emulation (Δ perplexity %: vLLM against its bf16 row, the torch replay of it against fp32)",
                            ["config", "emulation", "engine", "emulated", "gap (points)", "old emulation"],
                            [[r.get("config", "?"), fmt(r.get("emulation")), fmt(r.get("engine_pct"), "+.2f"),
                              fmt(r.get("emulated_pct"), "+.2f"), fmt(r.get("gap_pct_points"), "+.2f"),
                              fmt(r.get("old_emulation_pct"), "+.2f")] for r in versus]))
    ran = [r for r in data.get("configs", []) if r.get("agents") is not None]
    if ran:
        tables.append(Table(f"long context: concurrent {fmt(ran[0].get('agents_context'))}-token tasks in the KV budget",
                            ["config", "tasks", "tok/s"],
                            [[r.get("name", "?"), fmt(r.get("agents")), fmt(r.get("agents_tok_s"), ".1f")] for r in ran]))
    findings = (data.get("fake_quant_ordering") or {}).get("findings")
    if findings:
        tables.append(Table("Qllm-Eval findings reproduced?", ["finding", "holds"], [[k, fmt(v)] for k, v in findings.items()]))
    return tables


def load(data: dict[str, Any]) -> list[Table]:
    cols = ["series", "concurrency", "tasks", "tasks/min", "p50 s", "p95 s", "× vs C=1", "peak in flight", "KV use peak / mean",
            "mean output tokens", "length vs C=1", "same answer vs C=1"]
    rows = []
    for series, levels in (data.get("series") or {}).items():
        for r in levels:
            kv = f"{fmt(r.get('kv_usage_peak'), '.1%')} / {fmt(r.get('kv_usage_mean'), '.1%')}" if r.get("kv_usage_peak") is not None else "-"
            rows.append([series, fmt(r.get("concurrency")), fmt(r.get("tasks")), fmt(r.get("tasks_per_min"), ".1f"), fmt(r.get("p50_s"), ".2f"),
                         fmt(r.get("p95_s"), ".2f"), fmt(r.get("speedup_vs_1"), ".2f"), fmt(r.get("peak_in_flight")), kv,
                         fmt(r.get("mean_output_tokens"), ".0f"), fmt(r.get("length_ratio_vs_1"), ".2f"), fmt(r.get("same_answer_vs_1"), ".0%")])
    return [Table("agent tasks under load", cols, rows)] + _targets(data.get("targets"))


def pipeline(data: dict[str, Any]) -> list[Table]:
    """Per level and configuration: latency, throughput, the ratios to plain LangGraph, and quality beside them."""
    from vivace_bench.pipeline_bench import level_name

    cols = ["level", "config", "p50 s", "p95 s", "tasks/min", "× median", "× p95", "× throughput",
            "critical path p50 s", "identical", "similarity", "length", "coverage"]
    rows = [[level_name(lv), r.get("config", "?"), fmt(r.get("p50_s"), ".2f"), fmt(r.get("p95_s"), ".2f"),
             fmt(r.get("tasks_per_min"), ".1f"), fmt(r.get("speedup_median"), ".2f"), fmt(r.get("p95_ratio"), ".2f"),
             fmt(r.get("throughput_ratio"), ".2f"), fmt(r.get("critical_path_p50_s"), ".2f"),
             fmt(r.get("identical"), ".0%"), fmt(r.get("similarity"), ".2f"), fmt(r.get("length_ratio"), ".2f"),
             fmt(r.get("coverage"), ".2f")]
            for lv in data.get("levels", []) for r in lv.get("rows", [])]
    agents = [[level_name(lv), r.get("config", "?"), name, fmt(a.get("calls")), fmt(a.get("output_tokens")),
               fmt(a.get("call_s"), ".1f"), fmt(a.get("queue_s"), ".1f"), fmt(a.get("critical_s"), ".1f")]
              for lv in data.get("levels", []) for r in lv.get("rows", []) for name, a in (r.get("by_agent") or {}).items()]
    by_model = [[level_name(lv), r.get("config", "?"), name, fmt(m.get("calls")), fmt(m.get("output_tokens")),
                 fmt(m.get("call_s"), ".1f"), fmt(m.get("queue_s"), ".1f")]
                for lv in data.get("levels", []) for r in lv.get("rows", []) for name, m in (r.get("by_model") or {}).items()]
    served = [[m.get("name", "?"), m.get("backend", "-"), Path(m["weights"]).name if m.get("weights") else m.get("model", "-"),
               m.get("dtype") or "-", m.get("quantization") or "-", fmt(m.get("compiled"))]
              for m in data.get("models") or []]
    return [Table(f"multi-agent workloads vs plain LangGraph ({', '.join(data.get('workloads') or [])})", cols, rows),
            Table("per agent (summed over the level's tasks)", ["level", "config", "agent", "calls", "output tokens",
                                                                 "call s", "queue s", "on critical path s"], agents)
            ] + [t for t in (Table("per model (summed over the level's tasks)", ["level", "config", "model", "calls",
                                                                              "output tokens", "call s", "queue s"],
                                   by_model),
                             Table("models served", ["name", "backend", "weights", "dtype", "quantization", "compiled"],
                                   served)) if t.rows] + _targets(data.get("targets"))


def tools(data: dict[str, Any]) -> list[Table]:
    """Per configuration: latency, speed against LangGraph's ReAct agent, accuracy, calls, and where the time goes."""
    rows = data.get("rows", [])
    cols = ["config", "p50 s", "p95 s", "× median", "× of medians", "accuracy", "schema-valid", "model calls / task",
            "tool calls / task", "tokens / task", "cache hits", "failures"]
    main = [[r.get("config", "?"), fmt(r.get("p50_s"), ".2f"), fmt(r.get("p95_s"), ".2f"),
             fmt(r.get("speedup_median"), ".2f"), fmt(r.get("speedup_of_medians"), ".2f"),
             f"{fmt((r.get('accuracy') or {}).get('rate'), '.0%')} (n={fmt((r.get('accuracy') or {}).get('n'))})",
             fmt(r.get("schema_valid_rate"), ".0%"), fmt((r.get("per_task") or {}).get("calls"), ".1f"),
             fmt((r.get("per_task") or {}).get("tool_calls"), ".1f"),
             fmt(((r.get("per_task") or {}).get("prompt_tokens") or 0) + ((r.get("per_task") or {}).get("output_tokens") or 0), ".0f"),
             fmt(r.get("cache_hits")), fmt(r.get("failures"))] for r in rows]
    split = [[r.get("config", "?"), *(fmt((r.get("split_mean_s") or {}).get(k), ".2f")
                                      for k in ("model_s", "tool_s", "model_wall_s", "tool_wall_s", "overlap_s", "other_s"))]
             for r in rows]
    kinds = [[r.get("config", "?"), kind, fmt(k.get("tasks")), fmt(k.get("p50_s"), ".2f"), fmt(k.get("speedup_median"), ".2f"),
              fmt(k.get("accuracy"), ".0%")] for r in rows for kind, k in (r.get("by_kind") or {}).items()]
    return [Table("tool-using tasks: LangGraph's prebuilt ReAct agent vs vivace's tools agent", cols, main),
            Table("where a task's time goes (mean seconds: summed, then as wall time: model, tools, both at once, neither)",
                  ["config", "model calls (sum)", "tools (sum)", "model wall", "tools wall", "overlap", "other"], split),
            Table("per kind of task", ["config", "kind", "tasks", "p50 s", "× median", "accuracy"], kinds)]


def safety(data: dict[str, Any]) -> list[Table]:
    """Per configuration: harmful compliance and over-refusal with intervals, the change against its baseline, the verdict."""
    from vivace_bench.safety_summary import table_rows

    s = data.get("summary") or {}
    cols = ["config", "baseline", "harmful compliance [95% CI] n", "Δ compliance, pts [95% CI]", "over-refusal [95% CI] n",
            "Δ over-refusal, pts [95% CI]", "median latency s (benign)", "guard verdict"]
    tables = [Table(f"safety under acceleration (scorer {data.get('scorer', 'rules-v1')}; a 135M model: a smoke test of the method)",
                    cols, table_rows(s))]
    chk = data.get("scorer_check") or {}
    if chk:
        tables.append(Table("offline scorer vs hand labels", ["scorer", "labels", "agreement [95% CI]", "Cohen's kappa", "refusal recall"],
                            [[chk.get("scorer", "?"), fmt(chk.get("n")), f"{fmt(chk.get('agreement'), '.1%')} [{fmt((chk.get('agreement_ci95') or [None])[0], '.1%')}, {fmt((chk.get('agreement_ci95') or [None, None])[1], '.1%')}]",
                              fmt(chk.get("cohen_kappa"), ".2f"), fmt(chk.get("refusal_recall"), ".1%")]]))
    tables += _safety_by_category(s.get("configs") or {})
    cost = s.get("guard_cost") or {}
    if cost:
        tables.append(Table("the guard's cost and effect", ["config", "benign latency ×", "over-refusal without / with",
                                                             "harmful compliance without / with"],
                            [[k, fmt(v.get("benign_latency_ratio"), ".2f"),
                              f"{fmt(v['over_refusal']['without'], '.1%')} / {fmt(v['over_refusal']['with'], '.1%')}",
                              f"{fmt(v['harmful_compliance']['without'], '.1%')} / {fmt(v['harmful_compliance']['with'], '.1%')}"]
                             for k, v in cost.items()]))
    return tables


def _safety_by_category(configs: dict[str, Any]) -> list[Table]:
    """Harmful compliance on normal decoding per category, and each configuration's change against it (points)."""
    normal = (configs.get("normal") or {}).get("by_category") or {}
    others = [n for n in configs if n != "normal"]
    rows = []
    for cat, g in normal.items():
        if "harmful_compliance" not in g:
            continue
        row = [cat, f"{fmt(g['harmful_compliance']['rate'], '.0%')} (n={g['harmful_compliance']['n']})"]
        for n in others:
            ch = ((configs[n].get("by_category") or {}).get(cat) or {}).get("compliance_change") or {}
            row.append("-" if ch.get("delta") is None else f"{ch['delta'] * 100:+.0f}")
        rows.append(row)
    if not rows:
        return []
    return [Table("harmful compliance per category: normal decoding, and each config's change in points", ["category", "normal", *others], rows)]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[Table]]] = {
    "backend": backend, "overhead": overhead, "sot": sot, "context": context, "quant": quant, "load": load, "pipeline": pipeline,
    "tools": tools, "safety": safety, "faults": faults,
}


def tables_for(bench: str, data: dict[str, Any]) -> list[Table]:
    """The bench's own tables; a malformed or unknown report falls back to its scalar figures."""
    section = SECTIONS.get(bench)
    if section is not None:
        try:
            return section(data)
        except (AttributeError, TypeError, KeyError, ValueError):
            pass  # an older or hand-edited report: show what can be shown
    tables = [t for t in (_scalars("figures", data), _scalars("summary", data.get("summary") or {})) if t]
    return tables
