"""``shipyard demo``: the main job end to end on the embedded defaults.

Generates transactions, runs the fraud pipeline (train, evaluate, sign, register, promote),
scores a held-out file through the production alias's verified artifact and measures it
against the file's labels, trains a challenger and compares both on those same rows, then
starts the server under simulated users and promotes the challenger mid-traffic, publishes
the held-out transactions to the embedded broker for scorer processes and reads the results
back. Last, the loop: a server and a scorer under simulated users who label their answers;
the traffic drifts mid-run, and a monitor detects it, retrains on the labelled rows, gates
and promotes the candidate, which the server and the scorer swap in without a failed
request. It prints a summary, the loop's timeline and the commands to try next. A second
run on the same home registers the next versions.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from shipyard.cli.context import console, open_registry, settings_of

BASE_SEED = 7


def demo(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1000, help="Training transactions to generate")] = (
        100_000
    ),
    holdout_rows: Annotated[int, typer.Option(min=100, help="Held-out transactions")] = 20_000,
    requests: Annotated[
        int, typer.Option(min=100, help="Single-row requests sent to the demo server")
    ] = 4_000,
    stream_workers: Annotated[
        int, typer.Option(min=1, max=16, help="Scorer processes of the stream step")
    ] = 2,
) -> None:
    """Generate data; train, register, score, serve and stream the fraud model; then drift,
    retrain and promote it under traffic."""
    # Imported here: pandas, scikit-learn, the pipeline and the server take seconds to
    # import, which the other commands and --help skip.
    from rich.table import Table

    from shipyard.cli.demo.loop import demo_spec_text, run_loop
    from shipyard.cli.demo.next_steps import (
        next_steps,
        print_next_steps,
        shipyard_command,
        write_request,
    )
    from shipyard.cli.demo.scoring import batch_table, comparison_table, score_holdout, shown
    from shipyard.cli.demo.serving import serve_and_swap, swap_table
    from shipyard.cli.demo.streaming import stream_and_count, stream_table
    from shipyard.cli.demo.timeline import (
        gate_table,
        loop_failure,
        loop_verdicts,
        timeline_table,
        traffic_table,
    )
    from shipyard.cli.pipeline import run_table, run_with_status
    from shipyard.data import get_dataset, read_table, write_table
    from shipyard.errors import ModelNotFoundError, ShipyardError
    from shipyard.examples import example_spec
    from shipyard.pipeline import load_spec, parse_spec

    started = time.perf_counter()
    settings = settings_of(ctx)
    data_dir = settings.home / "data"
    # The packaged spec with the demo's retrain rules, scaled to a loop of under a minute.
    text = demo_spec_text(load_spec(example_spec("fraud"))[1])
    spec = parse_spec(text, source=f"{example_spec('fraud')} (with the demo's retrain rules)")
    fraud = get_dataset("fraud")
    with open_registry(ctx) as registry:
        try:
            previous = registry.get_model(spec.model.name).latest_version
        except ModelNotFoundError:
            previous = 0
        # Each run draws new transactions, so a second run trains a genuinely new version.
        seed = BASE_SEED + previous
        train_path = data_dir / f"fraud-train-{seed}.parquet"
        holdout_path = data_dir / f"fraud-holdout-{seed}.parquet"
        console.rule("[bold]1. data")
        write_table(fraud.generate(rows, seed), train_path)
        write_table(fraud.generate(holdout_rows, seed + 100_000), holdout_path)
        console.print(f"{rows:,} training and {holdout_rows:,} held-out rows in {data_dir}")

        console.rule("[bold]2. pipeline")
        result = run_with_status(registry, spec.with_data_file(train_path), text, console)
        console.print(run_table(result))

        console.rule("[bold]3. batch scoring through the registry")
        target = fraud.schema.target
        assert target is not None
        ref = f"{spec.model.name}@{spec.promotion.alias}"
        champion = score_holdout(
            registry,
            ref,
            holdout_path,
            data_dir / f"fraud-holdout-{seed}-scored.parquet",
            target=target,
        )
        console.print(batch_table(champion, ref))

        console.rule("[bold]4. serving, with a promotion mid-traffic")
        challenger_path = data_dir / f"fraud-challenger-{seed}.parquet"
        write_table(fraud.generate(rows // 2, seed + 200_000), challenger_path)
        challenger_spec = spec.with_data_file(challenger_path).model_copy(
            update={"promotion": spec.promotion.model_copy(update={"require": "never"})}
        )
        challenger = run_with_status(registry, challenger_spec, text, console)
        # Each version's test split is its own data: only the same held-out rows compare them.
        contender = score_holdout(
            registry,
            challenger.version.ref,
            holdout_path,
            data_dir / f"fraud-holdout-{seed}-scored-by-v{challenger.version.version}.parquet",
            target=target,
        )
        console.print(comparison_table(champion, contender))
        console.print(
            f"{contender.version.ref} goes to {spec.promotion.alias} halfway through the "
            "traffic, better or not: this step shows the swap, not a choice",
            soft_wrap=True,
        )
        holdout = read_table(holdout_path)
        swap = serve_and_swap(
            registry,
            settings,
            holdout.head(500),
            fraud.schema.feature_names,
            challenger.version.ref,
            total=requests,
            seed=seed,
            out=console,
        )
        console.print(swap_table(swap))

        console.rule("[bold]5. stream scoring through the embedded broker")
        streamed = stream_and_count(settings, holdout, workers=stream_workers, out=console)
        console.print(stream_table(streamed))

        console.rule("[bold]6. the loop: drift → retrain → promote → hot swap, under traffic")
        loop_started = time.perf_counter()
        loop, ui = run_loop(registry, settings, seed=seed, out=console)
        loop_seconds = time.perf_counter() - loop_started
        console.print(timeline_table(loop))
        gate = gate_table(loop)
        if gate is not None:
            console.print(gate)
        console.print(traffic_table(loop))
        for line in loop_verdicts(loop):
            console.print(line)

    # The challenger's best-caught held-out fraud: a request whose answer shows a fraud score.
    request = write_request(
        holdout,
        contender.scored["probability"],
        fraud.schema.feature_names,
        target,
        data_dir / "fraud-request.json",
    )
    summary = Table(title="shipyard demo", show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(overflow="fold")  # a digest is never cut
    summary.add_row("home", str(settings.home))
    verdict = "promoted" if result.promotion.promoted else "not promoted"
    summary.add_row(
        "registered",
        f"{result.version.ref} ({result.rows:,} rows; {verdict}: {result.promotion.reason}), "
        f"challenger {swap.promoted}"
        + ("" if loop.new is None else f", retrained {spec.model.name}:{loop.new}"),
    )
    summary.add_row(
        "production",
        f"{swap.promoted} (promoted mid-traffic)"
        if loop.new is None
        else f"{spec.model.name}:{loop.new} (retrained on drift and promoted by the monitor)",
    )
    for name in ("average_precision", "roc_auc"):
        summary.add_row(
            f"test {name}", f"{result.metrics[name]:.4f} ({result.version.ref}, its own test split)"
        )
    summary.add_row(
        "stage timings", ", ".join(f"{s.name} {s.duration_s:.2f}s" for s in result.stages)
    )
    production = champion.version
    summary.add_row(
        "held-out scoring",
        f"{champion.metrics.rows:,} rows by {production.ref} in {champion.seconds:.2f} s "
        f"({champion.rows_per_s:,.0f} rows/s)",
    )
    for name in ("average_precision", "roc_auc"):
        summary.add_row(
            f"held-out {name}",
            f"{shown(getattr(champion.metrics, name))} {production.ref}, "
            f"{shown(getattr(contender.metrics, name))} {contender.version.ref} (the same rows)",
        )
    summary.add_row("artifact", f"{production.format} manifest sha256:{production.manifest_digest}")
    summary.add_row("signed by key", production.key_id)
    summary.add_row("predictions", str(champion.output))
    report = swap.report
    summary.add_row(
        "serving",
        f"{report.sent:,} requests, {report.throughput:,.0f} req/s, p50 "
        f"{report.percentile_ms(50):.1f} ms, p99 {report.percentile_ms(99):.1f} ms, "
        f"{sum(report.errors.values())} errors; {swap.promoted} promoted mid-traffic",
    )
    summary.add_row(
        "stream",
        f"{streamed.published:,} published, {streamed.scored:,} scored + "
        f"{streamed.dead_lettered} dead-lettered, {streamed.throughput:,.0f} msg/s, p50 "
        f"{streamed.percentile_ms(50):.0f} ms, p99 {streamed.percentile_ms(99):.0f} ms "
        f"({stream_workers} worker{'s' * (stream_workers > 1)})",
    )
    took = f"the step took {loop_seconds:.1f} s"
    summary.add_row("loop", "; ".join([*loop_verdicts(loop), took]))
    summary.add_row("dashboard", f"{ui} (while the loop ran; `shipyard serve` shows it again)")
    summary.add_row("wall time", f"{time.perf_counter() - started:.1f} s")
    console.rule("[bold]summary")
    console.print(summary)
    shipyard = shipyard_command(ctx.find_root().params)
    steps = next_steps(
        shipyard,
        model=spec.model.name,
        request=request,
        previous=swap.promoted if loop.new is not None else production.ref,
    )
    print_next_steps(steps, console)
    failure = loop_failure(loop)
    if failure is not None:
        # The summary and the steps above are printed; the exit status says the loop failed.
        raise ShipyardError(f"the demo's loop did not close: {failure}")
