"""The ``edgedl`` command: parse flags, build what the API takes, call it; nothing else.

Errors a user can cause print one line and exit 1 (2 for usage); ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import click

from edgedl import __version__
from edgedl._fs import check_writable
from edgedl.errors import EdgedlError, counted


TRUST = click.option(
    "--trust-model-code", is_flag=True,
    help="Run Python code that a file names (a checkpoint's or recipe's model factory). Off: opening a file "
         "never runs code it names.")


def shape_label(shape) -> str:
    """A shape for the screen: sizes, the names of dynamic dimensions (``batch``), and ``?`` for an
    unnamed one or the long generated names exporters write (``unk__2``, ``s77``,
    ``Addoutput_dim_1``): they say nothing to a reader."""
    import re

    def dim(d) -> str:
        if isinstance(d, int) and d >= 0:
            return str(d)
        if not isinstance(d, str) or not d or d == "None":
            return "?"
        generated = re.fullmatch(r"(unk__\d+|s\d+|.*_dim_\d+|.*[Oo]utput.*)", d) or len(d) > 16
        return "?" if generated else d

    return "x".join(dim(d) for d in shape) or "scalar"


def _console(quiet: bool = False):
    from rich.console import Console

    console = Console(stderr=True, quiet=quiet)
    if not console.is_terminal:
        console.width = max(console.width, 150)  # logs and pipes: keep table rows on one line
    return console


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgedl")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def cli(debug: bool) -> None:
    """edgedl: compress, export and benchmark models for edge devices."""


def _options(command, options: list):
    for option in reversed(options):
        command = option(command)
    return command


def REACH_OPTIONS(command):
    """How devices are reached over SSH (bench --on and compress --on)."""
    return _options(command, [
        click.option("--ssh-config", type=click.Path(dir_okay=False, exists=True), default=None, envvar="EDGEDL_SSH_CONFIG",
                     help="SSH client configuration file (default: EDGEDL_SSH_CONFIG, else ~/.ssh/config)."),
        click.option("--accept-new-host", is_flag=True,
                     help="Trust a host key seen for the first time (recorded in known_hosts); a changed key is "
                          "refused either way."),
        click.option("--remote-edgedl", metavar="PATH",
                     help="edgedl's path on the devices, ~/ for their home (default: edgedl on the PATH, ~/.local/bin, "
                          "~/.edgedl/venv/bin, ~/.venv/bin)."),
    ])


def ON_OPTIONS(command):
    """Where a bench runs: --on (repeatable), how to reach SSH and adb devices, the run it joins."""
    return _options(command, [
        click.option("--on", multiple=True, metavar="ADDRESS",
                     help="Run on a device: ssh://[user@]host[:port], a host alias of ~/.ssh/config, adb://SERIAL or "
                          "local (repeatable: devices run in parallel)."),
        REACH_OPTIONS,
        click.option("--benchmark-model", type=click.Path(dir_okay=False), default=None,
                     help="LiteRT's Android benchmark_model binary, pushed to adb devices (or EDGEDL_BENCHMARK_MODEL)."),
        click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
                     help="Attach the results to this run folder: its report gains a column per device."),
    ])


def DB_OPTIONS(command):
    """The results database every bench and run goes into."""
    return _options(command, [
        click.option("--db", metavar="URL",
                     help="Results database (default: EDGEDL_RESULTS_DB, else sqlite:///~/.edgedl/results.db)."),
        click.option("--no-db", is_flag=True, help="Do not store the results."),
    ])


def open_db(url: str | None):
    """The results database, opened (and its schema checked) before any work."""
    from edgedl.results import ResultsDB

    return ResultsDB(url)


def store_results(db, rows: list[dict]) -> str | None:
    """Store result rows (:func:`edgedl.results.bench_row`, :func:`~edgedl.results.compress_rows`); the
    line that says where, or why not (the results stay on disk and on screen either way)."""
    if db is None or not rows:
        return None
    from edgedl.results import DatabaseError

    try:
        ids = db.add(rows)
    except DatabaseError as exc:
        click.echo(f"warning: {exc}", err=True)
        return None
    return f"stored as result {', '.join(map(str, ids))} in {db.shown} (edgedl results show ID)"


@cli.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", help="Model spec: registry name, file.py:factory, module:factory, checkpoint, TorchScript "
                              "file (trusted), .pt2, Hugging Face folder or .onnx (docs/models.md).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Weights the --model architecture takes: a state_dict .pt (read with weights_only), .safetensors, "
                   "or an edgedl checkpoint.")
@click.option("--data", help="Data spec: digits[:CxHxW], digits:seq, random:CxHxW, file.npz, images:FOLDER, "
                             "text:FILE or feeds.py:function.")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Train this many epochs first (the train stage alone: --prune fine-tunes 5 epochs on labelled data "
                   "and --distill runs 10; change them with --set stages.prune.finetune_epochs=N, --set "
                   "stages.distill.epochs=N).")
@click.option("--prune", type=click.FloatRange(0, 1, min_open=True, max_open=True), metavar="RATIO",
              help="Prune this fraction of channels (structured, Torch-Pruning), then fine-tune 5 epochs "
                   "(stages.prune.finetune_epochs).")
@click.option("--distill", is_flag=True, help="Distill the compressed model from the model before compression, 10 "
                                              "epochs (stages.distill.epochs).")
@click.option("--quantize", type=click.Choice(["int8", "fp16", "int8_dynamic"]), help="Quantize the ONNX export.")
@click.option("--qat", is_flag=True, help="Quantization-aware training: fine-tune 3 epochs with fake quantization, the "
                                          "float model teaching, and write an INT8 file per target from the learned "
                                          "scales (stages.qat.epochs).")
@click.option("--targets", default=None, help="Comma-separated targets: onnx, tflite, tensorrt (default: onnx).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Fix an ONNX model's dynamic input dimensions (repeatable).")
@click.option("--device", metavar="NAME",
              help="Device profile the artifacts are for (edgedl devices list); default: this host.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. --set stages.train.epochs=3 (repeatable).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Run directory (default runs/NAME-TIME).")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe as YAML and exit.")
@click.option("--quiet", is_flag=True, help="No progress or table on screen.")
@click.option("--on", metavar="ADDRESS", help="Run the benchmark stage on this device: ssh://[user@]host[:port] or a host "
                                              "alias of ~/.ssh/config (the rest of the run stays here).")
@click.option("--no-bench", is_flag=True, help="Leave out the benchmark stage: compress and evaluate here, time the "
                                               "files where they will run (edgedl bench FILE --on DEVICE).")
@REACH_OPTIONS
@DB_OPTIONS
@TRUST
def compress(recipe, model, weights, data, epochs, prune, distill, quantize, qat, targets, input_shapes, device, overrides,
             out, force, print_recipe, quiet, on, no_bench, ssh_config, accept_new_host, remote_edgedl, db, no_db,
             trust_model_code) -> None:
    """Run a recipe (or the one built from --model/--data and the flags) into a run directory.

    \b
      edgedl compress recipes/quickstart.yaml
      edgedl compress --model resnet18 --data random:3x224x224 --prune 0.5 --quantize int8
    """
    from edgedl import api
    from edgedl.recipe import load_recipe, parse_input_shapes, recipe_from_flags, recipe_to_yaml

    flags = {"--epochs": epochs, "--prune": prune, "--distill": distill or None, "--quantize": quantize,
             "--qat": qat or None}
    if no_bench and on:
        raise click.UsageError("--on runs the benchmark stage on a device and --no-bench leaves it out: give one")
    target_list = [t.strip() for t in targets.split(",") if t.strip()] if targets else None
    if recipe is not None:
        used = [name for name, value in flags.items() if value is not None]
        if used:
            raise click.UsageError(f"{', '.join(used)} {'builds' if len(used) == 1 else 'build'} a recipe; with a "
                                   "recipe file use --set instead")
        # Flags given with a recipe are applied, as the overrides --print-recipe shows.
        extra = [f"model.spec={model}"] if model else []
        extra += [f"model.weights={weights}"] if weights else []
        extra += [f"data.spec={data}"] if data else []
        extra += [f"device={device}"] if device else []
        if input_shapes:
            extra += [f"model.input_shapes={parse_input_shapes(list(input_shapes))}"]
        resolved = load_recipe(recipe, extra + list(overrides), targets=target_list)
    else:
        if not model or not data:
            raise click.UsageError("give a RECIPE file, or --model and --data")
        resolved = recipe_from_flags(model, data, epochs=epochs, prune=prune, distill=distill, quantize=quantize,
                                     qat=qat, targets=target_list, input_shapes=parse_input_shapes(list(input_shapes)),
                                     weights=weights, device=device)
        if overrides:
            from edgedl.recipe import apply_overrides, validate_recipe

            raw = resolved.model_dump(mode="json")
            apply_overrides(raw, list(overrides))
            resolved = validate_recipe(raw, source="flags")
    if no_bench:
        from edgedl.recipe import validate_recipe

        raw = resolved.model_dump(mode="json")
        bench = [stage for stage in raw["stages"] if stage["stage"] == "benchmark"]
        raw["stages"] = [stage for stage in raw["stages"] if stage["stage"] != "benchmark"]
        threads = bench[0].get("threads") if bench else None
        for stage in raw["stages"]:  # quick checks (the speed gate) time with the benchmark's threads
            if threads and "threads" in stage and stage["threads"] is None:
                stage["threads"] = threads
        resolved = validate_recipe(raw, source="--no-bench")
    if print_recipe:
        click.echo(recipe_to_yaml(resolved), nl=False)
        return
    # A factory named with --model is the user's to run; one a recipe file names needs the flag.
    typed = tuple(o.split("=", 1)[1] for o in overrides if "=" in o)  # --set values: typed by the user too
    api.check_trust(resolved, trust_model_code, named=(model, data, *typed))
    store = None if no_db else open_db(db)  # a database that refuses: now, not after the run
    reach = {"ssh_config": ssh_config, "accept_new_host": accept_new_host, "remote_edgedl": remote_edgedl,
             "trust_model_code": trust_model_code}
    result = api.compress(resolved, out=out, force=force, console=_console(quiet), progress=not quiet,
                          trust_model_code=trust_model_code, on=on, reach=reach if on else None)
    from edgedl.results import compress_rows

    stored = store_results(store, compress_rows(result.path, result.manifest))
    if stored and not quiet:
        click.echo(stored, err=True)


@cli.command()
@click.option("--model", required=True, help="Registry name, file.py:factory, module:factory or checkpoint.")
@click.option("--data", required=True, help="digits[:CxHxW], digits:seq, random:CxHxW, file.npz, images:FOLDER, text:FILE or feeds.py:function.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint file (.pt).")
@click.option("--quiet", is_flag=True)
@TRUST
def train(model, data, epochs, lr, batch_size, seed, out, quiet, trust_model_code) -> None:
    """Train a model and save the best-on-validation checkpoint (and its sidecar)."""
    from edgedl import api

    result = api.train(model, data, out, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                       console=_console(quiet), progress=not quiet, trust_model_code=trust_model_code)
    acc = result["val_accuracy"]
    click.echo(f"saved {result['checkpoint']} (best epoch {result['best_epoch']}, val accuracy "
               f"{'n/a' if acc is None else f'{acc:.4f}'})")


DEVICE = click.option("--device", metavar="NAME",
                      help="Device profile the figures are for (edgedl devices list); default: this host.")


@cli.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--request", "request_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Run a bench request file (what the benchmark stage's executors send) instead of ARTIFACT and "
                   "the options: it carries them all; --json, --quiet and --trust-model-code still apply.")
@click.option("--data", default=None, help="Feed real samples from a data spec (default: random arrays).")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs (at least).")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--min-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Keep running until at least this long has passed.")
@click.option("--batch", type=int, default=1, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Backend intra-op threads.")
@click.option("--backend", help="Runtime backend (default: from the file): onnxruntime, litert, torch.")
@click.option("--compute", help="Compute unit: cpu, cpu-qdq, cuda, tensorrt (ONNX Runtime); xnnpack, cpu-no-xnnpack (LiteRT); "
                                "cuda, cuda-fp16 (torch checkpoints); gpu, dla:N (TensorRT engines).")
@click.option("--cpus", metavar="LIST", help="Run on these CPUs only, e.g. 0-3 or 4,5 (big or LITTLE cores).")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="Shape of an input with dynamic dimensions (repeatable).")
@DEVICE
@click.option("--energy", default="auto", show_default=True, metavar="SOURCE",
              help="Power source: auto, ina3221, rapl, nvml, cmd:COMMAND, csv:FILE or none.")
@click.option("--sysfs-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="Read sensor files under this folder (a recorded tree replays a device's sensors).")
@click.option("--rails", metavar="A,B", help="Power rails whose sum is the total (default: the device profile's).")
@click.option("--idle-seconds", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Measure idle power this long first (0: no idle-subtracted figure).")
@click.option("--profile", "profile_ops", is_flag=True, help="Also show where the time goes per op type.")
@click.option("--until-stable", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Keep timing until the p50's 95% interval is within +-2%, or this many seconds pass.")
@click.option("--sustained", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Then run this long back to back and report how latency, power and temperature drift.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=0.0, metavar="SECONDS",
              help="Idle this long before loading the model (on the device), so the last run's heat is gone.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
              help="Write results as JSON to this file ('-' for standard output).")
@click.option("--quiet", is_flag=True, help="No table on screen.")
@ON_OPTIONS
@DB_OPTIONS
@TRUST
def bench(artifact, request_path, data, runs, warmup, min_seconds, batch, threads, backend, compute, cpus, input_shapes, device,
          energy, sysfs_root, rails, idle_seconds, profile_ops, until_stable, sustained, cooldown, json_path, quiet, on,
          ssh_config,
          accept_new_host, remote_edgedl, benchmark_model, run_dir, db, no_db, trust_model_code) -> None:
    """Measure cold start, latency, throughput, memory and energy per inference of an artifact, here or
    on your own devices (--on), and keep the result in the results database.

    \b
      edgedl bench model.onnx
      edgedl bench model.onnx --energy ina3221 --device jetson-orin-nano
      edgedl bench model.onnx --on ssh://nvidia@orin.local --on pi5
    """
    from edgedl._fs import atomic_write_json
    from edgedl.bench.request import BenchRequest
    from edgedl.bench.session import parse_cpus
    from edgedl.recipe import parse_input_shapes

    if json_path is not None and str(json_path) != "-":  # before the run, not after it
        check_writable(json_path, "--json")
    if request_path is not None:
        given = [p.opts[-1] for n, p in _given().items() if n not in ("request_path", "json_path", "quiet",
                                                                      "trust_model_code")]
        if artifact is not None or given:
            raise click.UsageError(f"--request carries the artifact and every option; drop {artifact or given[0]}")
        request = BenchRequest.read(request_path)
    elif artifact is None:
        raise click.UsageError("give an ARTIFACT to benchmark (or --request FILE)")
    else:
        request = BenchRequest.of(artifact=str(artifact), data=data, runs=runs, warmup=warmup, min_seconds=min_seconds,
                               batch=batch, threads=threads, input_shapes=parse_input_shapes(list(input_shapes)),
                               device=device, energy=energy, sysfs_root=str(sysfs_root),
                               rails=[r.strip() for r in rails.split(",") if r.strip()] if rails else None,
                               idle_seconds=idle_seconds, cpus=parse_cpus(cpus, here=not on), backend=backend, compute=compute,
                               profile_ops=profile_ops, until_stable=until_stable, sustained=sustained,
                               cooldown=cooldown)
    if on or run_dir is not None:
        from edgedl.cli_fleet import bench_fleet

        bench_fleet(request, list(on) or ["local"], json_path, quiet, db=False if no_db else db, run_dir=run_dir,
                    ssh_config=ssh_config, accept_new_host=accept_new_host, remote_edgedl=remote_edgedl,
                    benchmark_model=benchmark_model, trust_model_code=trust_model_code)
        return
    store = None if no_db or request_path is not None else open_db(db)  # an executor's child: its parent stores
    result = request.run(trust_model_code=trust_model_code)
    from edgedl.results import bench_row

    stored = store_results(store, [bench_row(result)] if store is not None else [])
    to_stdout = json_path is not None and str(json_path) == "-"
    if to_stdout:
        click.echo(json.dumps(result, indent=2, default=str))
    elif json_path:
        atomic_write_json(json_path, result)
    if not quiet:
        _print_bench(result)
        if stored:
            click.echo(stored, err=True)


def _above_idle(net: float | None, energy: dict) -> str:
    """The energy above idle, or why none shows: a net below the uncertainty is not a measurement."""
    if net is None:
        return ""
    if net <= energy["uncertainty_j_per_inference"]:
        return ", not distinguishable from idle (the load added less than the measurement's uncertainty)"
    return f", {1000 * net:.4f} mJ above idle"


def _print_bench(result: dict) -> None:
    from rich.table import Table

    m, c = result["metrics"], result["conditions"]
    lat = m["latency_ms"]
    table = Table(title=f"{Path(result['artifact']).name} on {result['backend']} "
                        f"(batch {c['batch']}, threads {c['threads'] or 'default'}, {c['runs']} runs)")
    for col in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "inf/s", "peak RSS MB"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "mean", "std")),
                  f"{m['throughput_ips']:.1f}", "—" if m["peak_rss_mb"] is None else f"{m['peak_rss_mb']:.0f}")
    console = _console()
    console.print(table)
    ci = (result.get("statistics") or {}).get("latency_ci95_ms")
    cold = result.get("cold_start") or {}
    lines = []
    if ci:
        lines.append(f"p50 95% interval {ci['p50'][0]:.3f}-{ci['p50'][1]:.3f} ms")
    if cold:
        lines.append(f"load {cold['load_ms']:.1f} ms, first inference {cold['first_inference_ms']:.3f} ms")
    scored = result.get("accuracy")
    if scored:
        low, high = scored["interval95"]
        lines.append(f"accuracy {100 * scored['value']:.2f}% on {scored['samples']} test samples "
                     f"(95% interval {100 * low:.1f}-{100 * high:.1f}%)")
    mem = result.get("memory") or {}
    if mem.get("load_mb") is not None:
        lines.append(f"model load added {mem['load_mb']:.1f} MB resident")
    for line in lines:
        console.print(line, markup=False)
    e = result.get("energy") or {}
    if e.get("j_per_inference") is not None:
        net = e["j_per_inference_net"]
        console.print(f"energy ({e['sensor']}): {1000 * e['j_per_inference']:.4f} mJ/inference "
                      f"± {1000 * e['uncertainty_j_per_inference']:.4f} mJ" + _above_idle(net, e)
                      + f"; {e['avg_w']:.3f} W average, {e['peak_w']:.3f} W peak"
                      + (f", {e['idle_w']:.3f} W idle" if e["idle_w"] is not None else "")
                      + f"; {e['samples']} samples", markup=False)
        for note in e.get("notes") or []:
            console.print(f"note: {note}", markup=False)
    else:
        console.print(f"energy: {e.get('reason')}", markup=False)
    ops = result.get("op_ms")
    if ops:
        if ops["ops"] is None:
            console.print(f"ops: {ops['note']}", markup=False)
        else:
            top = ", ".join(f"{op} {100 * share:.0f}%" for op, share in ops["shares"].items())
            console.print(f"where the time goes (share of kernel time per op type; {ops['note']}): {top}",
                          markup=False)
    gpu = result.get("gpu_time_ms")
    if gpu:
        console.print(f"GPU kernel time (CUDA events): p50 {gpu['p50']:.3f} ms, p99 {gpu['p99']:.3f} ms", markup=False)
    stable = result.get("until_stable")
    if stable:
        console.print(f"until stable: p50 interval ±{stable['p50_half_width_pct']:.1f}% after "
                      f"{counted(stable['batches'], 'batch', 'batches')} "
                      + ("(stable)" if stable["stable"] else f"(not within ±{stable['target_pct']:.0f}% in "
                                                              f"{stable['limit_s']:g} s)"), markup=False)
    heat = result.get("sustained")
    if heat:
        rows = heat["windows"]
        console.print(f"sustained {heat['seconds']:g} s: p50 {rows[0]['p50_ms']:.3f} -> {rows[-1]['p50_ms']:.3f} ms"
                      + (f", power {rows[0]['avg_w']:.2f} -> {rows[-1]['avg_w']:.2f} W" if rows[0]["avg_w"] else "")
                      + (f", temperature +{heat['drift']['temp_rise_c']:.1f} C" if heat["drift"]["temp_rise_c"]
                         is not None else ""), markup=False)
    for line in result.get("where") or []:
        console.print(f"note: {line}", markup=False)
    for flag in result.get("flags") or []:
        console.print(f"warning: {flag}", style="bold yellow", markup=False)


@cli.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", metavar="TARGET",
              help="tensorrt[:VERSION] for .onnx: lint for TensorRT's ONNX parser (default version: the --device's "
                   "JetPack, else the latest 10.x); tflite-gpu or nnapi for .tflite: ops that delegate leaves on the CPU.")
@click.option("--dla", is_flag=True, help="With --target tensorrt: also list the nodes that would fall back from "
                                          "the DLA to the GPU.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=1x3x224x224",
              help="For .onnx: shape of an input with dynamic dimensions, for the MAC count (repeatable).")
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@TRUST
def inspect(artifact, target, dla, input_shapes, device, as_json, trust_model_code) -> None:
    """Show an artifact's inputs, outputs, opsets, ops, parameters, MACs and size (.onnx, .tflite, .pt,
    .engine); with --target tensorrt, what TensorRT's ONNX parser would reject.

    \b
      edgedl inspect model.onnx --target tensorrt --device jetson-orin-nano
      edgedl inspect model.onnx --target tensorrt:8.6 --dla --device jetson-agx-orin-64gb
    """
    from edgedl import api
    from edgedl.recipe import parse_input_shapes

    info = api.inspect(artifact, target, input_shapes=parse_input_shapes(list(input_shapes)),
                       trust_model_code=trust_model_code, device=device, dla=dla)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        if (info.get("tensorrt_lint") or {}).get("passed") is False:
            sys.exit(1)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    io_table = Table(title=f"{Path(info['path']).name}")
    for col in ("kind", "name", "shape", "dtype"):
        io_table.add_column(col)
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            io_table.add_row(kind[:-1], t["name"], shape_label(t["shape"]), t["dtype"])
    console.print(io_table)
    opsets = ", ".join(f"{k} {v}" for k, v in info.get("opsets", {}).items()) or "—"
    macs = "—" if info["macs"] is None else f"{info['macs']:,}"
    params = "—" if info["params"] is None else f"{info['params']:,}"
    arch = info.get("architecture")
    if arch:
        console.print(f"architecture: {arch['spec']} ({arch['source']}{', runs code' if arch['runs_code'] else ''})",
                      markup=False)
    console.print(f"opsets: {opsets}   nodes: {info['nodes'] if info['nodes'] is not None else '—'}   params: "
                  f"{params}   MACs/sample: {macs}   size: {info['size_bytes']:,} bytes", markup=False)
    for key, why in (info.get("notes") or {}).items():
        console.print(f"{key}: {why}", markup=False)
    if info.get("can"):
        console.print("use it with: " + "; ".join(info["can"]), markup=False)
    fit = info.get("device")
    if fit:
        runs = f"runs on {', '.join(fit['runtimes'])}" if fit["runtimes"] else "no runtime"
        console.print(f"device {fit['name']}: {runs}; " + ("; ".join(fit["problems"]) or "precision supported"),
                      markup=False)
    delegate = info.get("delegate")
    if delegate:
        if delegate["cpu_ops"] is None:
            console.print(f"{delegate['target']}: {delegate['note']}")
        else:
            left = ", ".join(f"{op} x{n}" for op, n in delegate["cpu_ops"].items()) or "none"
            console.print(f"{delegate['target']}: ops left on the CPU ({delegate['source']}): {left}")
            if delegate["note"]:
                console.print(f"note: {delegate['note']}")
    if info["ops"]:
        ops = Table(title="op histogram")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, count in info["ops"].items():
            ops.add_row(op, str(count))
        console.print(ops)
    if info.get("tensorrt_lint"):
        if not _print_lint(console, info["tensorrt_lint"]):
            sys.exit(1)  # the parser would reject the file: scripts can stop before shipping it


def _print_lint(console, report: dict, per_rule: int = 5) -> bool:
    """The lint's findings, grouped by rule (the first few of each), then one verdict line."""
    from edgedl.formats.tensorrt.lint import Finding

    trt = report["tensorrt"]
    console.print(f"TensorRT {trt['version']} ({trt['why']}; op table: {trt['table_source']})", markup=False)
    by_rule: dict[str, list] = {}
    for f in report["findings"]:
        by_rule.setdefault(f["rule"], []).append(Finding(**f))
    for rule, found in by_rule.items():
        for f in found[:per_rule]:
            console.print(f.line(), markup=False)
        if len(found) > per_rule:
            console.print(f"  ... and {len(found) - per_rule} more [{rule}] (--json lists every one)", markup=False)
    c = report["counts"]
    verdict = "passes" if report["passed"] else "would be REJECTED"
    console.print(f"tensorrt: {verdict}: {c['error']} error(s), {c['warning']} warning(s)"
                  + (f", {c['gpu_fallback']} node(s) fall back from the DLA to the GPU" if report["dla"] else ""),
                  markup=False)
    return report["passed"]


@cli.command("build-engine")
@click.argument("onnx", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Engine file (default: ONNX name, .engine).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]), default="auto", show_default=True,
              help="auto: what the ONNX holds (Q/DQ: int8). int8 needs the Q/DQ ONNX compress --targets tensorrt writes.")
@click.option("--sparsity", is_flag=True, help="Let TensorRT use 2:4 sparse kernels (Ampere/Orin).")
@click.option("--dla", "dla_core", type=click.IntRange(min=0), metavar="CORE", help="Build for this DLA core (GPU fallback on).")
@click.option("--batch", metavar="MIN,OPT,MAX", help="Profile of a dynamic batch axis (default 1; one number: static).")
@click.option("--workspace", "workspace_mb", type=click.IntRange(min=1), metavar="MB", help="Builder workspace limit.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Read and update this timing cache file.")
@click.option("--version-compatible", is_flag=True, help="Build an engine later TensorRT versions can run (8.6+).")
@click.option("--hardware-compatible", is_flag=True, help="Build for every Ampere-or-later GPU (not on Jetson).")
@click.option("--tf32/--no-tf32", default=None,
              help="Let FP32 layers use TF32 (default: off for --precision fp32, on for fp16 and int8 builds).")
@click.option("--tensorrt", "trt_version", metavar="VERSION", help="With --dry-run: the TensorRT version to plan for.")
@DEVICE
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Engine cache (default ~/.cache/edgedl/engines).")
@click.option("--no-cache", is_flag=True, help="Build afresh; do not read or write the engine cache.")
@click.option("--no-trust", is_flag=True, help="Do not pin the built engine in the trust file.")
@click.option("--dry-run", is_flag=True, help="Lint and print the plan (edgedl and trtexec lines); build nothing.")
@click.option("--on", metavar="ADDRESS", help="Build on this SSH device (ssh://[user@]host[:port] or a host alias) with "
                                              "its TensorRT; the engine, its sidecar and the build log come back.")
@REACH_OPTIONS
def build_engine(onnx, out, precision, sparsity, dla_core, batch, workspace_mb, timing_cache, version_compatible,
                 hardware_compatible, tf32, trt_version, device, cache_dir, no_cache, no_trust, dry_run, on, ssh_config,
                 accept_new_host, remote_edgedl) -> None:
    """Build a TensorRT engine from an ONNX file, on this device, through Polygraphy.

    \b
      edgedl build-engine runs/jetson/artifacts/resnet8.distilled.int8.onnx
      edgedl build-engine model.onnx --precision fp16 --dla 0 --batch 1 --dry-run --device jetson-agx-orin-64gb
    """
    from edgedl import api
    from edgedl.formats.tensorrt.plan import BuildOptions, parse_batch

    options = BuildOptions(precision=precision, sparsity=sparsity, dla_core=dla_core, batch=parse_batch(batch),
                           workspace_mb=workspace_mb, timing_cache=timing_cache, version_compatible=version_compatible,
                           hardware_compatible=hardware_compatible, tf32=tf32)
    if dry_run:
        plan = api.plan_engine(onnx, out, options, device=device, tensorrt=trt_version)
        console = _console()
        passed = _print_lint(console, {**plan["lint"], "tensorrt": plan["tensorrt"], "dla": dla_core is not None})
        software = plan["device_software"]
        if software and software["jetpack"]:
            click.echo(f"device: JetPack {software['jetpack']} (CUDA {software['cuda']}, Python {software['python']}, "
                       f"{software['platform']})" + (f"; on it: pip install '{software['cuda_python']}'"
                                                     if software["cuda_python"] and not plan["edgedl_cannot_run"] else ""))
        elif software:
            click.echo(f"device: {software['platform'] or 'TensorRT platform unknown'}"
                       + (f" ({software['note']})" if software["note"] else ""))
        click.echo(f"edgedl: {plan['commands']['edgedl'] or 'cannot run there (' + plan['edgedl_cannot_run'] + ')'}"
                   + ("" if plan["commands"]["edgedl"] else ": build with the trtexec line"))
        click.echo(f"trtexec: {plan['commands']['trtexec']}")
        click.echo(f"cache key: {plan['cache_key']}")
        if not passed:
            sys.exit(1)  # TensorRT's parser would reject the file: do not ship it
        return
    if trt_version:
        raise click.UsageError("--tensorrt applies to --dry-run; a build uses the TensorRT installed here")
    if on:
        context = click.get_current_context()
        given = _given()
        local = [given[n].opts[-1] for n in ("out", "timing_cache", "cache_dir") if n in given]
        if local:
            raise click.UsageError(f"{local[0]} is a path on this machine; with --on the engine comes back beside the "
                                   "ONNX file and the device keeps its own cache")
        flags = [arg for n, p in given.items() if n not in ("onnx", "on", "ssh_config", "accept_new_host",
                                                            "remote_edgedl")
                 for arg in _flag(p, context.params[n])]
        built = api.build_engine_on(onnx, on, flags, {"ssh_config": ssh_config, "accept_new_host": accept_new_host,
                                                      "remote_edgedl": remote_edgedl})
        for path in built["files"]:
            click.echo(f"brought back {path}")
        click.echo(f"build log: {built['log']}")
        return
    sidecar = api.build_engine(onnx, out, options, device=device, cache=cache_dir, use_cache=not no_cache,
                               trust=not no_trust, console=_console())
    gpu = sidecar["gpu"]
    click.echo(f"{'reused' if sidecar['cached'] else 'built'} {sidecar['artifact']} ({sidecar['precision']}, TensorRT "
               f"{sidecar['tensorrt']['version']}, {gpu['name']} compute capability {gpu['compute_capability']})")


def _given() -> dict:
    """The current command's parameters the user typed on the command line, by name."""
    context = click.get_current_context()
    return {p.name: p for p in context.command.params
            if context.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE}


def _flag(param, value) -> list[str]:
    """A command-line option as it was given, to hand on to a device's edgedl."""
    if param.is_flag and not param.secondary_opts:
        return [param.opts[-1]] if value else []
    if param.is_flag:  # --tf32/--no-tf32
        return [param.opts[-1] if value else param.secondary_opts[-1]]
    return [param.opts[-1], str(value)]


@cli.group()
def trust() -> None:
    """Pin TensorRT engines this device may load (engines are native code; a sidecar is not proof of origin)."""


@trust.command("add")
@click.argument("engines", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file", "trust_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Trust file (default $EDGEDL_TRUSTED_ENGINES or ~/.config/edgedl/trusted-engines.txt).")
def trust_add(engines, trust_file) -> None:
    """Pin each ENGINE's sha256 in the trust file."""
    from edgedl.runtime.engine_guard import add_trusted

    for engine in engines:
        digest, where = add_trusted(engine, trust_file)
        click.echo(f"pinned {engine.name} ({digest[:16]}...) in {where}")


@trust.command("list")
@click.option("--file", "trust_file", type=click.Path(dir_okay=False, path_type=Path), help="Trust file to read.")
def trust_list(trust_file) -> None:
    """The pinned engines: file name, sha256 and what their sidecars said when they were pinned."""
    from edgedl.runtime.engine_guard import list_trusted, trust_file as where

    pins = list_trusted(trust_file)
    for pin in pins:
        click.echo(f"{pin['name'] or '(no name)'}  {pin['sha256'][:16]}...  {pin['facts'] or '(pinned without facts)'}")
    click.echo(f"{len(pins)} engine(s) pinned in {where(trust_file)}" if pins else
               f"no engines pinned in {where(trust_file)} (edgedl trust add ENGINE pins one)", err=True)


@cli.group()
def devices() -> None:
    """Device profiles: list them, show one, or detect the one this machine is."""


@devices.command("list")
def devices_list() -> None:
    """Every device profile edgedl knows."""
    from edgedl.devices import list_profiles

    for p in list_profiles():
        sensors = ", ".join(s.energy for s in p.power.sensors) or "none"
        click.echo(f"{p.name:22} {p.kind:6} {p.arch:8} energy: {sensors:8} {p.title}")


@devices.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_show(name, as_json) -> None:
    """One profile, every field with its source."""
    from edgedl.devices import get_profile

    data = get_profile(name).model_dump(mode="json", exclude_none=True)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    import yaml

    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110), nl=False)


@devices.command("detect")
@click.option("--sysfs-root", type=click.Path(file_okay=False, path_type=Path), default=Path("/"), show_default=True,
              help="Read the machine's description under this folder (a recorded tree).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def devices_detect(sysfs_root, as_json) -> None:
    """The profile that fits this machine, what it was read from, and the power sensors found."""
    from edgedl.bench.energy import open_source
    from edgedl.devices import detect, get_profile

    if not sysfs_root.is_dir():
        raise click.UsageError(f"--sysfs-root {sysfs_root}: no such folder")
    found = detect(sysfs_root)
    source, why = open_source("auto", sysfs_root, get_profile(found["profile"]))
    found["energy"] = {"source": source.name, "sensor": source.describe()} if source else {"source": None, "reason": why}
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"{found['profile']}: {found['why']}")
    for key, value in found["seen"].items():
        if value:
            click.echo(f"  {key}: {value}")
    energy = found["energy"]
    click.echo(f"energy: {energy['source']} ({energy['sensor']})" if energy["source"] else
               f"energy: none ({energy['reason']})")


@cli.command("models")
@click.argument("pattern", default="*")
def models_cmd(pattern: str) -> None:
    """List registered models matching a pattern."""
    from edgedl.errors import UsageError
    from edgedl.models import get_entry, list_models

    names = list_models(pattern)
    if not names:
        raise UsageError(f"no registered model matches '{pattern}' (edgedl models lists them all; your own come "
                         "with --model file.py:factory)")
    for name in names:
        entry = get_entry(name)
        shape = "x".join(map(str, entry.default_input))
        click.echo(f"{name:18} {shape:10} {entry.description}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    # --debug is taken anywhere on the line: after the subcommand as well as before it.
    debug = "--debug" in args
    if debug:
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        cli.main(args=args, prog_name="edgedl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.NoArgsIsHelpError as exc:  # `edgedl`, `edgedl devices`: the help, not an error
        click.echo(exc.ctx.get_help())
        sys.exit(0)
    except click.UsageError as exc:  # one line, as every other error: no usage block, no "Error:"
        where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        click.echo(f"error: {exc.format_message()}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("interrupted", err=True)
        sys.exit(130)
    except EdgedlError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, not a user error: say so, keep the traceback behind --debug
        if debug:
            traceback.print_exc()
        click.echo(f"error: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


from edgedl import cli_fleet as _cli_fleet  # noqa: E402,F401  (registers results, report, device-facts)
