"""The evaluation report, as a library (its CLI: `python -m resps_jax.report`).

Tables in the paper's terms: Table 1 (speed per benchmark and mean, as speed-ups over our
AR and over EAGLE-3 60/5/10), Wilcoxon signed-rank p-values of Re-SpS against each
baseline per benchmark (paired by question x turn, scipy), Table 6 (acceptance length:
tokens per step, mean +- sd; acceptance rate: accepted drafts per verified node), unique
actions and an action histogram per benchmark, and the acceptance-length distribution.
Speed per benchmark is total tokens over total seconds of its turns; AR's run-to-run
spread is |ar - ar_again| from the same run. The verdict lines say plainly whether Re-SpS
beats AR (beyond that spread) and the best static action, and where.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from resps_jax.rl.adaptive import ADAPTIVE_METHODS

EAGLE_BASELINE = "eagle3:60,5,10"


def load_records(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return records


def speeds(records: list[dict]) -> dict[str, dict[str, float]]:
    """{benchmark: {method: tokens/s}} (total tokens / total seconds), plus 'mean' over benchmarks."""
    tokens: dict = defaultdict(lambda: defaultdict(float))
    seconds: dict = defaultdict(lambda: defaultdict(float))
    for r in records:
        tokens[r["benchmark"]][r["method"]] += r["tokens"]
        seconds[r["benchmark"]][r["method"]] += r["seconds"]
    out = {b: {m: tokens[b][m] / seconds[b][m] for m in tokens[b] if seconds[b][m] > 0} for b in tokens}
    methods = sorted({m for b in out for m in out[b]})
    out["mean"] = {m: float(np.mean([out[b][m] for b in list(out) if b != "mean" and m in out[b]])) for m in methods}
    return out


def turn_key(record: dict) -> tuple[str, str, int]:
    """(benchmark, question id, turn): what every method's record of one question-turn shares."""
    return record["benchmark"], str(record["question_id"]), record["turn"]


def by_turn(records: list[dict]) -> dict[tuple[str, str, int], dict[str, dict]]:
    """{question-turn: {method: record}}."""
    grouped: dict = defaultdict(dict)
    for r in records:
        grouped[turn_key(r)][r["method"]] = r
    return grouped


def paired(records: list[dict], a: str, b: str, benchmark: str | None) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(v[a]["tokens_per_second"], v[b]["tokens_per_second"]) for key, v in by_turn(records).items()
             if (benchmark is None or key[0] == benchmark) and a in v and b in v]
    return np.asarray([p[0] for p in pairs]), np.asarray([p[1] for p in pairs])


def wilcoxon_p(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy import stats

    if len(x) < 2 or np.allclose(x, y):
        return None
    return float(stats.wilcoxon(x, y).pvalue)


def method_order(methods: set[str]) -> list[str]:
    def key(m: str):
        rank = {"ar": 0, "ar_again": 1, "best_static": 4, "resps": 6, "resps_argmax": 7}
        if m.startswith("resps@"):
            return (8, (int(m.split("@")[1]),), m)
        if m.split("@")[0] in ADAPTIVE_METHODS:  # the adaptive baselines just before the policy
            return (5, (int(m.split("@")[1]),) if "@" in m else (), m)
        # trees by size (4,2,2 before 12,4,3), `ar` (no numbers) first among the static actions
        sizes = tuple(int(v) for v in m.split(":", 1)[-1].split(",") if v.isdigit())
        return (rank.get(m, 2 if m.startswith("static:") else 3), sizes, m)

    return sorted(methods, key=key)


def speed_table(records: list[dict]) -> list[str]:
    """Table 1 as markdown lines, heading included: tokens/s per benchmark and mean, each with
    its speed-up over our AR. report.md holds it; evaluate prints it last (`speed_summary`)."""
    table = speeds(records)
    benches = [b for b in table if b != "mean"]
    lines = ["## Speed (tokens/s; x = speed-up over our AR)", "",
             "| method | " + " | ".join(benches) + " | mean |", "|---" * (len(benches) + 2) + "|"]
    for m in method_order({r["method"] for r in records}):
        cells = []
        for b in [*benches, "mean"]:
            v, ar = table[b].get(m), table[b].get("ar")
            cells.append(f"{v:.1f} ({v / ar:.2f}x)" if v is not None and ar else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def speed_summary(report_dir: Path) -> str:
    """The speed table of a written report, then the full report's path.

    What an evaluation run (`make demo`'s last step) ends with, so its result is on the
    terminal rather than only in a file to open; the table is report.md's own.
    """
    report_dir = Path(report_dir)
    return "\n".join([*speed_table(load_records(report_dir / "results.jsonl")), "",
                      f"Full report: {report_dir / 'report.md'}"])


def write_report(report_dir: Path, command: str = "") -> str:
    """Write report.md and the PNGs into report_dir; return the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report_dir = Path(report_dir)
    records = load_records(report_dir / "results.jsonl")
    if not records:
        raise ValueError(f"{report_dir / 'results.jsonl'} holds no records")
    table = speeds(records)
    benches = [b for b in table if b != "mean"]
    methods = method_order({r["method"] for r in records})
    lines = ["# Re-SpS evaluation report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    turns = len({turn_key(r) for r in records})
    identical = sum(r["identical_to_ar"] for r in records)
    lines += [f"{turns} question-turns, {len(methods)} methods, {len(records)} records; "
              f"{identical}/{len(records)} outputs token-identical to our AR.", ""]
    lines += speed_table(records)  # Table 1: tokens/s and speed-ups
    if EAGLE_BASELINE in methods and "resps" in methods:
        lines += ["", "Re-SpS over EAGLE-3 60/5/10: " + ", ".join(
            f"{b} {table[b]['resps'] / table[b][EAGLE_BASELINE]:.2f}x" for b in [*benches, "mean"]
            if "resps" in table[b] and EAGLE_BASELINE in table[b])]
    lines += verdict(records, table, benches, methods, report_dir)
    if "resps" in methods:
        lines += wilcoxon_table(records, benches, methods)
    lines += acceptance_table(records, benches, methods)  # Table 6
    lines += switching_ceiling(records, benches)
    lines += oracle_ceiling(records, benches)
    if "resps" in methods:
        lines += action_histograms(records, benches, report_dir, plt)
    lines += speed_plots(records, table, benches, methods, report_dir, plt)
    lines += interval_sweep(records, report_dir, plt)
    lines += step_profile(report_dir)
    path = report_dir / "report.md"
    path.write_text("\n".join(lines))
    return str(path)


def verdict(records: list[dict], table: dict, benches: list[str], methods: list[str], report_dir: Path) -> list[str]:
    """AR's run-to-run spread, the grid search's pick, and whether each policy method beats AR
    (beyond that spread) and the best static action, per set and overall."""
    lines = ["", "## Verdict", ""]
    spread = {b: abs(table[b]["ar"] - table[b]["ar_again"]) / table[b]["ar"]
              for b in benches if "ar" in table[b] and "ar_again" in table[b]}
    if spread:
        lines.append("AR run-to-run spread (|ar - ar_again| / ar): " + ", ".join(
            f"{b} {100 * s:.1f}%" for b, s in spread.items()))
    statics = [m for m in methods if m.startswith("static:") or m == "best_static"]
    # Where the policy's set holds `ar` but `static:ar` was not run, plain AR stands for it:
    # the `ar`-only policy is AR (0.98-1.0x), and leaving it out would make a losing tree the
    # "best static action" the policy is measured against.
    ar_in_set = any("ar" in r.get("actions", []) for r in records if r["method"] in ("resps", "resps_argmax"))
    if ar_in_set and "static:ar" not in statics and "ar" in methods:
        statics.append("ar")
    grid = None  # the static action `evaluate --grid-search` picked on training prompts, as a method name
    if (report_dir / "best_static.json").is_file():
        pick = json.loads((report_dir / "best_static.json").read_text())
        grid = "best_static" if "best_static" in methods else f"static:{pick['action']}"
        lines.append(f"Grid search ({pick.get('prompts', '?')} {pick.get('source', 'training')} prompts, never "
                     f"benchmarks) picked static:{pick['action']}: " + ", ".join(
                         f"{a} {v:.1f}" for a, v in pick.get("tokens_per_second", {}).items()) + " tok/s.")
    for pm in [m for m in ("resps", "resps_argmax") if m in methods]:
        for b in [*benches, "mean"]:
            row = table[b]
            if pm not in row:
                continue
            best = max(statics, key=lambda m: row.get(m, 0.0)) if statics else None
            vs_ar = row[pm] / row["ar"]
            tol = spread.get(b, float(np.mean(list(spread.values()))) if spread else 0.0)
            ar_word = "beats" if vs_ar > 1 + tol else ("matches (within the AR spread)" if vs_ar >= 1 - tol else "LOSES TO")
            text = f"- {b}: {pm} {row[pm]:.1f} tok/s {ar_word} AR ({vs_ar:.3f}x)"
            if best:
                ratio = row[pm] / row[best]
                text += f"; {'beats' if ratio > 1 else 'does not beat'} the best static action here, {best} ({ratio:.3f}x)"
            lines.append(text)
        overall = table["mean"]
        if statics:
            best_overall = max(statics, key=lambda m: overall.get(m, 0.0))
            lines.append(f"- Overall: {pm} / best single static action ({best_overall}, of those run: "
                         f"{', '.join(statics)}) = {overall[pm] / overall[best_overall]:.3f}x (goal >= 1.05x)")
        if grid and grid in overall:
            lines.append(f"- Overall: {pm} / the grid search's pick ({grid}, chosen on training prompts) = "
                         f"{overall[pm] / overall[grid]:.3f}x")
    return lines


def wilcoxon_table(records: list[dict], benches: list[str], methods: list[str]) -> list[str]:
    """Re-SpS against every other method, paired per question-turn, per set and over all."""
    baselines = [m for m in methods if m not in ("resps", "ar_again")]  # resps_argmax included
    lines = ["", "## Wilcoxon signed-rank p-values (Re-SpS vs each method, paired per question-turn)", "",
             "| vs | " + " | ".join([*benches, "all"]) + " |", "|---" * (len(benches) + 2) + "|"]
    for m in baselines:
        cells = []
        for b in [*benches, None]:
            p = wilcoxon_p(*paired(records, "resps", m, b))
            cells.append("-" if p is None else f"{p:.2g}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def acceptance_table(records: list[dict], benches: list[str], methods: list[str]) -> list[str]:
    """Table 6: tokens per step (bonus included), mean +- sd over steps, per method and set."""
    lines = ["", "## Acceptance (tokens per step incl. bonus: mean +- sd over steps)", "",
             "| method | " + " | ".join(benches) + " |", "|---" * (len(benches) + 1) + "|"]
    for m in methods:
        if m in ("ar", "ar_again"):
            continue
        cells = []
        for b in benches:
            acc = [a for r in records if r["method"] == m and r["benchmark"] == b for a in r["accepted"]]
            cells.append(f"{np.mean(acc):.2f} +- {np.std(acc):.2f}" if acc else "-")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def action_histograms(records: list[dict], benches: list[str], report_dir: Path, plt) -> list[str]:
    """The policy's actions per set (sampled, and argmax where run), listed and in actions.png."""
    lines = ["", "## Re-SpS actions", ""]
    fig, axes = plt.subplots(1, len(benches), figsize=(3.2 * len(benches), 3), squeeze=False)
    for ax, b in zip(axes[0], benches):
        hist = Counter(a for r in records if r["method"] == "resps" and r["benchmark"] == b for a in r["actions"])
        lines.append(f"- {b}: {len(hist)} unique actions; " + ", ".join(f"{a}: {c}" for a, c in hist.most_common()))
        argmax = Counter(a for r in records if r["method"] == "resps_argmax" and r["benchmark"] == b for a in r["actions"])
        if argmax:
            lines.append("  - argmax: " + ", ".join(f"{a}: {c}" for a, c in argmax.most_common()))
        names = sorted(hist)
        ax.bar(range(len(names)), [hist[n] for n in names])
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_title(b, fontsize=9)
    axes[0][0].set_ylabel("intervals")
    fig.suptitle("Re-SpS action choices per benchmark")
    fig.tight_layout()
    fig.savefig(report_dir / "actions.png", dpi=110)
    plt.close(fig)
    return lines + ["", "![actions](actions.png)"]


def speed_plots(records: list[dict], table: dict, benches: list[str], methods: list[str], report_dir: Path,
                plt) -> list[str]:
    """acceptance.png (the distribution of tokens per step) and speedup.png (over our AR)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for m in methods:
        acc = [a for r in records if r["method"] == m for a in r["accepted"]]
        if acc and m not in ("ar", "ar_again"):
            ax.hist(acc, bins=np.arange(0.5, max(acc) + 1.5), histtype="step", density=True, label=m)
    ax.set_xlabel("tokens per step (accepted drafts + bonus)")
    ax.set_ylabel("fraction of steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(report_dir / "acceptance.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        ax.bar(np.arange(len(benches) + 1) + i * width,
               [table[b].get(m, 0) / table[b]["ar"] for b in [*benches, "mean"]], width, label=m,
               color=plt.cm.tab20(i % 20))  # 20 distinct colours: a method count past 10 repeats none
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(benches) + 1) + 0.4 - width / 2, [*benches, "mean"])
    ax.set_ylabel("speed-up over our AR")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    fig.savefig(report_dir / "speedup.png", dpi=110)
    plt.close(fig)
    return ["", "![acceptance](acceptance.png)", "", "![speed-ups](speedup.png)", ""]


def switching_gain(ar: dict, tree: dict, interval: int) -> tuple[float, float]:
    """(seconds AR spends on the tokens of tree's steps, seconds an oracle switching between
    AR and tree every `interval` steps spends on them), from one question-turn's two records.

    Greedy outputs are identical, so both decoders commit the same tokens and tree's accepted
    lengths say, interval by interval, how many tokens it commits there; an oracle that knows
    them picks per interval whichever of AR (seconds per token) and the tree (seconds per step)
    is faster there. No policy over these two actions at this interval can do better.
    """
    ar_per_token = ar["seconds"] / ar["tokens"]
    tree_per_step = tree["seconds"] / tree["steps"]
    accepted = tree["accepted"]
    ar_seconds = oracle_seconds = 0.0
    for start in range(0, len(accepted), interval):
        chunk = accepted[start : start + interval]
        ar_seconds += sum(chunk) * ar_per_token
        oracle_seconds += min(sum(chunk) * ar_per_token, len(chunk) * tree_per_step)
    return ar_seconds, oracle_seconds


def switching_ceiling(records: list[dict], benches: list[str], interval: int = 30) -> list[str]:
    """The most any policy switching between `ar` and one tree could gain on these very turns."""
    by_key = by_turn(records)
    trees = [m for m in method_order({r["method"] for r in records})
             if (m.startswith("static:") or m.startswith("eagle3:")) and m != "static:ar"]
    rows = []
    for m in trees:
        cells = []
        totals = np.zeros(2)
        for b in benches:
            sums = np.zeros(2)
            for (bench, _, _), v in by_key.items():
                if bench == b and "ar" in v and m in v and v[m]["accepted"] and v[m]["steps"] and v["ar"]["tokens"]:
                    sums += switching_gain(v["ar"], v[m], interval)
            cells.append(f"{sums[0] / sums[1]:.3f}x" if sums[1] else "-")
            totals += sums
        rows.append((m, cells, totals[0] / totals[1] if totals[1] else None))
    if not rows:
        return []
    lines = ["", f"## Ceiling of switching (an oracle choosing `ar` or one tree every {interval} steps)", "",
             "Speed-up over AR that a policy choosing perfectly between AR and this tree per interval would "
             "reach on these turns (each tree's measured accepted lengths and seconds per step, AR's seconds "
             "per token). A learned policy cannot beat this; where it is near 1.00x no policy can pay.", "",
             "| tree | " + " | ".join([*benches, "all"]) + " |", "|---" * (len(benches) + 2) + "|"]
    lines += [f"| {m} | " + " | ".join(cells) + f" | {'-' if total is None else f'{total:.3f}x'} |"
              for m, cells, total in rows]
    return lines


def _commit_ends(record: dict) -> np.ndarray:
    """Token positions (after the prefill's token) at which each step of a static run ended;
    an AR run (no accepted lengths) ends a step at every position."""
    accepted = record.get("accepted") or [1] * max(0, record["tokens"] - 1)
    return np.cumsum(accepted)  # [steps]


def oracle_over_actions(turn: dict[str, dict], interval: int) -> tuple[float, float]:
    """(seconds AR spends on this turn's tokens, seconds an oracle spends choosing among every
    static method and `ar` every `interval` steps), from one question-turn's records.

    Greedy outputs are identical, so every method commits the same text, and each run's
    accepted lengths say where its steps end. From a position p, an action's next step is
    taken to commit up to the end of its own run's step that covers p (its acceptance,
    aligned by token position: an approximation, since a step started at p drafts from p).
    At each decision the oracle takes the action that commits the most tokens per second
    over its next `interval` steps (greedy per decision; seconds per step are each run's own:
    its seconds over its steps). No policy choosing among these actions every `interval` steps
    does better, up to that alignment.
    """
    ar = turn["ar"]
    total = len(_commit_ends(ar))
    ar_seconds = total * ar["seconds"] / max(ar["tokens"], 1)
    runs = {m: (_commit_ends(r), r["seconds"] / max(r["steps"], 1)) for m, r in turn.items()
            if (m == "ar" or m.startswith("static:") or m == "best_static") and r["steps"]}
    runs["ar"] = (_commit_ends(ar), ar["seconds"] / max(ar["tokens"], 1))
    position, seconds = 0, 0.0
    while position < total:
        best = None
        for ends, per_step in runs.values():
            q, steps = position, 0
            while steps < interval and q < total:
                q = int(ends[np.searchsorted(ends, q, side="right")]) if q < ends[-1] else total
                steps += 1
            rate = (q - position) / (steps * per_step)
            if best is None or rate > best[0]:
                best = (rate, q, steps * per_step)
        _, position, spent = best
        seconds += spent
    return ar_seconds, seconds


def oracle_ceiling(records: list[dict], benches: list[str], intervals: tuple[int, ...] = (1, 10, 30)) -> list[str]:
    """The room for a policy: an oracle over every static action run (and `ar`) at each
    interval, against the best single static action on the same turns, per set."""
    statics = [m for m in method_order({r["method"] for r in records}) if m.startswith("static:")]
    if len(statics) < 2:
        return []
    turns = {k: v for k, v in by_turn(records).items() if "ar" in v and all(m in v for m in statics)}
    header = ["| | " + " | ".join([*benches, "all"]) + " |", "|---" * (len(benches) + 2) + "|"]
    rows = []
    for label, seconds_of in [("best static action", None)] + [(f"oracle, every {n} steps", n) for n in intervals]:
        cells = []
        for b in [*benches, None]:
            mine = [v for (bench, _, _), v in turns.items() if b is None or bench == b]
            ar_total = sum(len(_commit_ends(v["ar"])) * v["ar"]["seconds"] / max(v["ar"]["tokens"], 1) for v in mine)
            if seconds_of is None:  # the single static action fastest over these turns
                spent = min(sum(v[m]["seconds"] for v in mine) for m in statics) if mine else 0.0
            else:
                spent = sum(oracle_over_actions(v, seconds_of)[1] for v in mine)
            cells.append(f"{ar_total / spent:.3f}x" if spent else "-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return ["", f"## The room: an oracle over {len(statics)} static actions and `ar`", "",
            "Speed-up over AR on the same turns: the best single static action, and an oracle that "
            "chooses among all of them every N steps, each action's acceptance aligned by token "
            "position (`oracle_over_actions`). The gap is the most a policy over this set can gain.", "",
            *header, *rows]


def interval_sweep(records: list[dict], report_dir: Path, plt) -> list[str]:
    """Fig. 3: mean seconds per question-turn and tokens/s against the cache interval N
    (methods resps@N), over the question-turns every N decoded."""
    sweep = sorted({int(r["method"].split("@")[1]) for r in records if r["method"].startswith("resps@")})
    if not sweep:
        return []
    turns = set.intersection(*[{turn_key(r) for r in records if r["method"] == f"resps@{n}"} for n in sweep])
    rows = []
    for n in sweep:
        mine = [r for r in records if r["method"] == f"resps@{n}" and turn_key(r) in turns]
        seconds = float(np.mean([r["seconds"] for r in mine]))
        speed = sum(r["tokens"] for r in mine) / sum(r["seconds"] for r in mine)
        decisions = float(np.mean([len(r["actions"]) for r in mine]))
        rows.append((n, seconds, speed, decisions))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", color="tab:blue")
    ax.set_xlabel("cache interval N (steps per policy decision)")
    ax.set_ylabel("seconds per question-turn", color="tab:blue")
    twin = ax.twinx()
    twin.plot([r[0] for r in rows], [r[2] for r in rows], "s--", color="tab:red")
    twin.set_ylabel("tokens/s", color="tab:red")
    ax.set_title(f"Cache interval sweep ({len(turns)} question-turns)")
    fig.tight_layout()
    fig.savefig(report_dir / "interval_sweep.png", dpi=110)
    plt.close(fig)
    lines = ["## Cache-interval sweep (Fig. 3)", "", "| N | seconds per turn | tokens/s | decisions per turn |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {sec:.3f} | {tps:.1f} | {dec:.1f} |" for n, sec, tps, dec in rows]
    return lines + ["", "![interval sweep](interval_sweep.png)", ""]


def step_profile(report_dir: Path) -> list[str]:
    """Table 8 from report/profile.json (evaluate --profile): milliseconds per step by piece."""
    path = report_dir / "profile.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())
    pieces = rows[0]["pieces"]  # decoding/profile.py names them
    lines = ["## Where a step's time goes (Table 8; `evaluate --profile`)", "",
             "Each piece of the step jitted alone on a mid-decode state; `step` is the compiled interval's own "
             "time per step, `ar` the no-draft step. ms per step (% of the pieces' sum):", "",
             "| action | " + " | ".join(pieces) + " | sum | step | ar | step / ar |", "|---" * 8 + "|"]
    for row in rows:
        ms = row["ms"]
        total = sum(ms[p] for p in pieces)
        cells = [f"{ms[p]:.3f} ({100 * ms[p] / total:.1f}%)" for p in pieces]
        ar = ms.get("ar_step")
        lines.append(f"| {row['action']} | " + " | ".join(cells) + f" | {total:.2f} | {ms['step']:.2f} | "
                     + (f"{ar:.2f} | {ms['step'] / ar:.2f} |" if ar else "- | - |"))
    overhead = {p: float(np.mean([r["ms"][p] for r in rows])) for p in pieces if p != "verification"}
    total = sum(overhead.values())
    lines += ["", "The paper's consolidation (overhead only, the target's forward left out), mean over actions: "
              + ", ".join(f"{p} {100 * v / total:.2f}%" for p, v in overhead.items()) + ".", ""]
    return lines


def training_summary(log_path: Path, window: int = 50) -> dict:
    """Questions trained, and over the last `window` questions of a run's train_log.jsonl (what
    the policy had reached when it was evaluated): the mean reward, the `ar` share, and the
    turn's first decision's most-sampled action with its share (where earlier policies
    collapsed, or settled)."""
    turns = [r for r in load_records(log_path) if r.get("type") == "turn"] if log_path.is_file() else []
    if not turns:
        return {"questions": 0, "reward": None, "ar_share": None, "first": None}
    last = [r for r in turns if r["question"] > turns[-1]["question"] - window]
    rewards = [x for r in last for x in r["rewards"]]
    actions = [a for r in last for a in r["actions"]]
    firsts = Counter(r["actions"][0] for r in last if r["actions"])
    top = firsts.most_common(1)
    return {"questions": turns[-1]["question"] + 1, "reward": float(np.mean(rewards)) if rewards else None,
            "ar_share": actions.count("ar") / len(actions) if actions else None,
            "first": (top[0][0], top[0][1] / sum(firsts.values())) if top else None}


def decision_windows(turns: list[dict], window: int = 50) -> list[dict]:
    """Per `window` training questions: each decision index's action shares (0, 1 and 2+, as
    the turn's first decision sees the prompt's end and later ones the answer), the critic's
    mean value at decision 0 and the mean reward each action earned there. A first decision
    collapsing onto an action worse than another shows as a share near 1 beside a lower
    reward; a critic far below every reward shows the cause."""
    rows = []
    for start in range(0, (turns[-1]["question"] + 1) if turns else 0, window):
        chunk = [r for r in turns if start <= r["question"] < start + window]
        if not chunk:
            continue
        row = {"questions": f"{start}-{start + window - 1}", "turns": len(chunk), "shares": {}}
        for label, pick in (("0", lambda acts: acts[:1]), ("1", lambda acts: acts[1:2]), ("2+", lambda acts: acts[2:])):
            taken = Counter(a for r in chunk for a in pick(r["actions"]))
            total = sum(taken.values())
            row["shares"][label] = {a: c / total for a, c in taken.most_common()} if total else {}
        values = [r["values"][0] for r in chunk if r.get("values")]
        row["value0"] = float(np.mean(values)) if values else None
        first = defaultdict(list)
        for r in chunk:
            if r["actions"] and r["rewards"]:
                first[r["actions"][0]].append(r["rewards"][0])
        row["reward0"] = {a: float(np.mean(v)) for a, v in first.items()}
        row["reward"] = float(np.mean([x for r in chunk for x in r["rewards"]]))
        rows.append(row)
    return rows


def ablation_table(runs: list[Path]) -> list[str]:
    """The ablation table: one row per run folder (a config or `config:ABLATION` workdir, each
    trained and evaluated on its own), Re-SpS's speed over the AR timed beside it in the same
    evaluation, per benchmark and mean, sampled and argmax, with where its training ended
    (over its last 50 questions: reward, `ar` share, the first decision's favourite)."""
    rows, benches = [], []
    for run in runs:
        run = Path(run)
        results = run / "report" / "results.jsonl"
        if not results.is_file():
            raise ValueError(f"{run}: no report/results.jsonl (evaluate this run first)")
        table = speeds(load_records(results))
        benches += [b for b in table if b != "mean" and b not in benches]
        rows.append((run.name, table, training_summary(run / "train_log.jsonl")))
    head = ["run", "questions trained", "final reward", "ar share", "first decision"]
    lines = ["| " + " | ".join(head) + " | method | " + " | ".join([*benches, "mean"]) + " |",
             "|---" * (len(head) + len(benches) + 2) + "|"]
    for name, table, summary in rows:
        trained = [name, str(summary["questions"]),
                   "-" if summary["reward"] is None else f"{summary['reward']:.3f}",
                   "-" if summary["ar_share"] is None else f"{100 * summary['ar_share']:.0f}%",
                   "-" if summary["first"] is None else f"{summary['first'][0]} {100 * summary['first'][1]:.0f}%"]
        for method in ("resps", "resps_argmax"):
            cells = [f"{table[b][method] / table[b]['ar']:.2f}x"
                     if method in table.get(b, {}) and table[b].get("ar") else "-" for b in [*benches, "mean"]]
            lines.append("| " + " | ".join(trained) + f" | {method} | " + " | ".join(cells) + " |")
            trained = [""] * len(head)
    return lines
