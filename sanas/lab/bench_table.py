"""The streaming benchmark's result (:func:`sanas.lab.bench_streaming.run_streaming_benchmark`)
as Markdown lines: the table of steps, the node breakdown, the memory model, the targets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sanas.lab.bench_timing import CONVOLUTIONS


def format_table(result: Mapping[str, Any]) -> list[str]:
    """The benchmark as Markdown lines."""
    return [
        *_step_table(result),
        "",
        *format_streams(result["multi_stream"]),
        "",
        *format_backends(result["backends"]),
        "",
        *_summary(result),
        "",
        "Where the time goes: ms per step of each node in context (GMAC/s executed)",
        "",
        *_node_table(result["node_ms"]),
        "",
        *format_static_split(result),
        *format_memory(result["memory"], result["tiers"]),
        "",
        *(
            f"target {name}: {target['value']:.3f} ({target['target']}): "
            + ("met" if target["met"] else "NOT met")
            for name, target in result["targets"].items()
        ),
    ]


def _step_line(label: str, row: Mapping[str, Any], ratios: str = "| |") -> str:
    """A configuration's row of the step table."""
    return (
        f"| {label} | {row['ms']:.3f} | {row['ms_beyond_features']:.3f} | "
        f"{row['macs'] / 1e6:.2f}M | {row['macs_executed'] / 1e6:.2f}M {ratios}"
    )


def _step_table(result: Mapping[str, Any]) -> list[str]:
    """The title, then ms and MACs per step of every configuration."""
    machine = result["machine"]
    by_threads = machine["static_cached_ms_by_threads"]
    chosen = (
        "static cached step at "
        + ", ".join(f"{k} thread(s): {v:.2f} ms" for k, v in by_threads.items())
        if by_threads
        else "threads given"
    )
    static = result["static"]
    window, cached = static["static_window"], static["static_cached"]
    static_ratios = (
        f"| {cached['ms'] / window['ms']:.3f} | "
        f"{cached['macs_executed'] / window['macs_executed']:.3f} |"
    )
    mix = result["mix"]
    return [
        f"Streaming benchmark: batch 1, {machine['threads']} thread(s) ({chosen}), "
        f"torch {machine['torch']}; medians per 200 ms step (the mix: mean), features included",
        "",
        "| configuration | ms/step | beyond features | MACs/window | MACs executed | "
        "time ratio | MAC ratio (executed) |",
        "|---|---|---|---|---|---|---|",
        f"| features (incremental MFCC) | {result['features_ms']:.3f} | | | | | |",
        _step_line("static, window by window (reference NCHW)", static["static_window_reference"]),
        _step_line("static, window by window (engine, no cache)", window),
        _step_line("static, cached", cached, static_ratios),
        *(
            _step_line(
                f"SANAS tier {tier}",
                row,
                f"| {row['time_ratio']:.3f} | {row['executed_mac_ratio']:.3f} |",
            )
            for tier, row in result["tiers"].items()
        ),
        _step_line(f"SANAS mix ({mix['source']}; median {mix['ms_median']:.3f} ms)", mix),
    ]


def format_streams(many: Mapping[str, Any]) -> list[str]:
    """Stream-steps per second with each count of streams batched, and the speed-up of
    the most streams over one."""
    counts = [str(count) for count in many["streams"]]
    most = counts[-1]
    lines = [
        "Many streams batched (one step of every stream per batch): stream-steps per second",
        "",
        "| network | " + " | ".join(f"{c} stream(s)" for c in counts) + f" | {most} vs 1 |",
        "|---" * (len(counts) + 2) + "|",
    ]
    for network, row in many["rows"].items():
        cells = " | ".join(f"{row[c]['stream_steps_per_s']:.0f}" for c in counts)
        lines.append(f"| {network} | {cells} | x{many['speedup'][network]:.2f} |")
    return lines


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_backends(backends: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """ms per step of the same rows on each backend (batch 1), a tier's time ratio to the
    full tier beside its executed MAC ratio, the real-time factors and the model files."""
    names = list(backends)
    tiers = list(next(iter(backends.values()))["tiers"])
    lines = [
        "Backends, ms per step at batch 1, features included (tiers: ms, time ratio / "
        "executed MAC ratio to the full tier); on ONNX Runtime, the static window is the "
        "plain export without state, the other rows the deployed step with row caches",
        "",
        "| configuration | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        "| static, window by window | "
        + " | ".join(_ms(backends[b]["static_window"]) for b in names)
        + " |",
        "| static, cached step | "
        + " | ".join(_ms(backends[b]["static_cached"]) for b in names)
        + " |",
    ]
    for tier in tiers:
        cells = []
        for backend in names:
            row = backends[backend]["tiers"][tier]
            cells.append(
                f"{row['ms']:.3f} ({row['time_ratio']:.3f} / {row['executed_mac_ratio']:.3f})"
            )
        lines.append(f"| SANAS tier {tier} | " + " | ".join(cells) + " |")
    lines += [
        "| trained SANAS point (torch without a run: the mix) | "
        + " | ".join(_ms(backends[b]["point"]) for b in names)
        + " |",
        "| real-time factor, audio in → detections out | "
        + " | ".join(
            ", ".join(f"{k} {v:.4f}" for k, v in backends[b]["rtf"].items()) for b in names
        )
        + " |",
        "| model size, MB (torch: fp32 weights read per step) | "
        + " | ".join(
            ", ".join(f"{k} {v:.2f}" for k, v in backends[b]["file_mb"].items()) for b in names
        )
        + " |",
    ]
    return lines


def _summary(result: Mapping[str, Any]) -> list[str]:
    """The real-time factors and the training rates."""
    train = result["train_windows_per_s"]
    return [
        "Time ratios: against the uncached static step (static) or the full tier (tiers). "
        "Real-time factor (audio in → detections out): "
        + ", ".join(f"{k} {v:.4f}" for k, v in result["rtf"].items()),
        f"Training windows/s ({train['windows_per_batch']:.0f} windows of 3 s sequences per "
        f"batch, forward + backward, {result['machine']['train_threads']} threads): plain "
        f"{train['plain']:.1f}, shared {train['shared']:.1f} (x{train['speedup']:.2f})",
    ]


def _node_table(node_ms: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    """Each node's ms per step (GMAC/s) in each configuration of the breakdown."""
    configs = list(node_ms)
    lines = ["| node | " + " | ".join(configs) + " |", "|---" * (len(configs) + 1) + "|"]
    names = dict.fromkeys(n for config in configs for n in node_ms[config])
    for name in names:
        cells = []
        for config in configs:
            node = node_ms[config].get(name)
            cells.append(f"{node['ms']:.3f} ({node['gmacs_per_s']:.1f})" if node else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def format_static_split(result: Mapping[str, Any]) -> list[str]:
    """The static steps of the node breakdown's run split into features, convolutions,
    other nodes and the rest (per-step overhead: Python, copies, hooks)."""
    lines = []
    for config in ("static_window", "static_cached"):
        nodes = result["node_ms"][config]
        step = result["breakdown_steps"][config]
        convs = [v for n, v in nodes.items() if n in CONVOLUTIONS]
        conv_ms = sum(v["ms"] for v in convs)
        conv_rate = sum(v["macs_executed"] for v in convs) / conv_ms / 1e6
        other_ms = sum(v["ms"] for n, v in nodes.items() if n not in CONVOLUTIONS)
        rest = step["step_ms"] - step["features_ms"] - conv_ms - other_ms
        lines.append(
            f"{config} (breakdown run): {step['step_ms']:.3f} ms = features "
            f"{step['features_ms']:.3f} + convolutions {conv_ms:.3f} ({conv_rate:.1f} GMAC/s) "
            f"+ other nodes {other_ms:.3f} + rest {rest:.3f}."
        )
    return lines


def format_memory(memory: Mapping[str, Any], tiers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The memory-traffic explanation of the tiers' time ratios, as Markdown lines."""
    gemv = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in memory["gemv_gb_per_s"].items())
    weights = ", ".join(f"{tier} {mb:.1f} MB" for tier, mb in memory["weight_mb"].items())
    model = memory["tiers"]
    tier = tiers["35M"]
    return [
        f"Memory: fp32 weights read per step: {weights}. Batch-1 matrix-vector product "
        f"(addmv, 128 rows; full = 29.5 MB, half = 14.8 MB) in GB/s: {gemv}.",
        f"In the full tier, convolutions run at {memory['conv_gmacs_per_s']:.1f} GMAC/s and "
        f"dense layers read their weights at {memory['dense_gb_per_s']:.1f} GB/s (1 MAC per "
        "4 bytes: memory-bound). Two-rate model, features + conv MACs / rate + dense bytes / "
        f"bandwidth: 35M {model['35M']['predicted_ms']:.3f} ms "
        f"({model['35M']['conv_macs'] / 1e6:.2f}M conv MACs, "
        f"{model['35M']['dense_weight_bytes'] / 1e6:.1f} MB), full "
        f"{model['full']['predicted_ms']:.3f} ms ({model['full']['conv_macs'] / 1e6:.2f}M, "
        f"{model['full']['dense_weight_bytes'] / 1e6:.1f} MB): predicted time ratio "
        f"{memory['predicted_35M_time_ratio']:.3f} = "
        f"{memory['predicted_35M_time_over_mac_ratio']:.2f}x the executed MAC ratio "
        f"{tier['executed_mac_ratio']:.3f} (measured {tier['time_ratio']:.3f} = "
        f"{tier['time_over_mac_ratio']:.2f}x; per-window MAC ratio {tier['mac_ratio']:.3f}: "
        f"{tier['time_over_window_mac_ratio']:.2f}x; beyond features "
        f"{tier['time_ratio_beyond_features']:.3f}).",
    ]
