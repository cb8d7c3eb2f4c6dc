"""``lora-telemetry``: the demo, the CPU test bed, benchmarks, advice, and checks of the installation.

The plugin itself needs only its core requirements; the commands that draw tables, make test beds or
charts need an extra (``[testbed]``, ``[bench]``, ``[top]``), and say which one in one line when it is missing.
``doctor`` and ``dashboards`` work on the core install.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

# Modules that only the extras bring, and the extra each command needs.
_EXTRA_MODULES = {"rich", "httpx", "matplotlib", "peft", "smg"}


def _console() -> Any:
    from rich.console import Console

    # Tables stay readable when the output is a pipe or a CI log, not only in a wide terminal.
    return Console(width=None if sys.stdout.isatty() else 200)


def _testbed_make(args: argparse.Namespace) -> int:
    from lora_telemetry.testbed import make

    console = _console()
    with console.status("making the test bed") as status:
        progress = lambda msg: status.update(f"making {msg}")  # noqa: E731
        if args.shape is None:
            count = 8 if args.adapters is None else args.adapters
            bed = make(Path(args.dir), adapters=count, seed=args.seed, progress=progress)
        else:
            from lora_telemetry.testbed.shapes import make_shaped, shape_named

            shape = shape_named(args.shape, layers=args.layers, hidden=args.hidden,
                                intermediate=args.intermediate, heads=args.heads, kv_heads=args.kv_heads)
            count = 16 if args.adapters is None else args.adapters
            bed = make_shaped(Path(args.dir), shape, adapters=count, rank=args.rank, seed=args.seed, progress=progress)
    console.print(f"test bed ready: model {bed.model}, {len(bed.adapters())} adapters in {bed.adapter_dir}")
    return 0


def _testbed_serve(args: argparse.Namespace, extra: list[str]) -> int:
    from lora_telemetry.testbed import cpu_compat, server_flags

    env = cpu_compat.prepare_environment(dict(os.environ))
    command = [sys.executable, "-m", "sglang.launch_server", *server_flags(args.dir, extra)]
    print(" ".join(command), flush=True)
    os.execvpe(command[0], command, env)


def _testbed_fleet(args: argparse.Namespace, extra: list[str]) -> int:
    from lora_telemetry.testbed.fleet_command import run

    return run(args, extra, _console())


def _demo(args: argparse.Namespace) -> int:
    from lora_telemetry.demo import run

    return run(args, _console())


def _bench(args: argparse.Namespace) -> int:
    from lora_telemetry.bench import command, report

    console = _console()
    if args.scrape_stall:
        report.scrape_stall(console, args.scrape_stall, args.rounds or 3, args.duration)
        return 0
    if args.advise_scale:
        report.advise_scale(console, args.advise_scale)
        return 0
    if args.hooks or args.scrape or args.live_scrape:
        if args.hooks:
            report.hook_costs(console)
        if args.scrape:
            report.scrape_costs(console, [int(n) for n in args.scales.split(",")], args.churn)
        if args.live_scrape:
            report.live_scrape(console, args.live_scrape, args.scrapes)
        return 0
    if args.stub:
        return command.stub_accuracy(args, console)
    if args.compare_overhead:
        from lora_telemetry.bench import overhead

        return overhead.run(args, console)
    if args.plan_effect:
        from lora_telemetry.bench import plan_effect

        return plan_effect.run(args, console)
    return command.run_traffic(args, console)


def _advise(args: argparse.Namespace) -> int:
    if len(args.files) > 1:
        from lora_telemetry.capacity import fleet_command

        return fleet_command.run(args, _console())
    from lora_telemetry.capacity import command

    args.file = args.files[0]
    return command.run(args, _console())


def _top(args: argparse.Namespace) -> int:
    from lora_telemetry.top import run

    if args.interval <= 0 or args.limit <= 0:
        raise ValueError("--interval and --limit must be positive")
    return run(args.url, args.interval, args.limit, args.once, _console())


def _doctor(args: argparse.Namespace) -> int:
    from lora_telemetry.doctor import run

    return run(as_json=args.json)


def _dashboards(args: argparse.Namespace) -> int:
    from lora_telemetry.dashboards import write

    for path in write(args.dir):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-telemetry",
        description="Observability for SGLang multi-LoRA serving. The plugin itself needs no command: "
        "installed next to sglang it attaches to every SGLang process. These commands run the demo, "
        "the CPU test bed, and checks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="serve mixed-adapter traffic on the CPU test bed and show per-adapter telemetry",
                          description="Makes (once) a tiny local model with LoRA adapters, starts a real SGLang "
                          "server on the CPU with fewer pool slots than adapters, drives mixed-adapter traffic "
                          "over /generate and /v1/completions, and prints a per-adapter table read from /metrics.")
    demo.add_argument("--dir", type=Path, default=None,
                      help="test bed directory (default: ~/.cache/lora_telemetry/testbed)")
    demo.add_argument("--adapters", type=int, default=8, help="number of adapters (default 8)")
    demo.add_argument("--slots", type=int, default=4, help="pool slots, --max-loras-per-batch (default 4)")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds of traffic (default 30)")
    demo.add_argument("--concurrency", type=int, default=6, help="concurrent clients (default 6)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the traffic mix")
    demo.add_argument("--keep-serving", action="store_true", help="leave the server up and print its /metrics URL")
    demo.add_argument("--replicas", type=int, default=1,
                      help="serve through SMG, SGLang's gateway, in front of this many servers (needs the [fleet] "
                      "extra); the table sums the replicas, and the fleet's access logs are advised on")
    demo.add_argument("--gateway-policy", default="round_robin", help="SMG's routing policy with --replicas")
    demo.set_defaults(run=_demo, extra="testbed")

    bench = sub.add_parser(
        "bench", help="mixed-adapter traffic generator, overhead comparison, and the cost of telemetry",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Drives S-LoRA's workload model open-loop against a server (--url) or an embedded test-bed "
        "server: adapter popularity a power law with exponent --alpha over --adapters N, Gamma inter-arrival "
        "times with --rate and --cv, uniform prompt and output lengths. Prints a per-adapter summary, writes "
        "bench-result.json and PNG charts to --out. Other modes: --compare-overhead, --stub, --hooks, --scrape.")
    traffic = bench.add_argument_group("workload")
    traffic.add_argument("--url", help="a running SGLang server (default: start the test-bed server)")
    traffic.add_argument("--adapters", type=int, default=8, help="adapters in the mix")
    traffic.add_argument("--alpha", type=float, default=1.0, help="power-law exponent of adapter popularity")
    traffic.add_argument("--rate", type=float, default=4.0, help="requests per second")
    traffic.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of inter-arrival times")
    traffic.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    traffic.add_argument("--requests", type=int, help="a number of requests instead of --duration")
    traffic.add_argument("--prompt-len", default="8:64", help="prompt tokens, uniform MIN:MAX")
    traffic.add_argument("--output-len", default="8:32", help="output tokens, uniform MIN:MAX")
    traffic.add_argument("--seed", type=int, default=0, help="the same seed gives the same schedule")
    traffic.add_argument("--slots", type=int, default=4, help="pool slots of the embedded server")
    traffic.add_argument("--out", default="bench-out", help="folder for the JSON result and charts")
    traffic.add_argument("--record", type=Path, metavar="FILE",
                         help="also write the schedule's requests as an access log for lora-telemetry advise")
    modes = bench.add_argument_group("other modes")
    modes.add_argument("--compare-overhead", action="store_true",
                       help="the plugin's cost: fresh servers with the plugin off and on in alternating pairs, the "
                       "same workload; the test bed, or --model with --adapter-dir")
    modes.add_argument("--rounds", type=int,
                       help="pairs of runs (plugin off and on) for --compare-overhead (default 3); pairs of runs "
                       "(LRU and the plan) for --plan-effect (default 1); rounds for --scrape-stall (default 3)")
    modes.add_argument("--warmup-rounds", type=int, default=1,
                       help="--compare-overhead: runs first and not counted (a GPU host's first server compiles "
                       "Triton kernels; default 1)")
    modes.add_argument("--side-by-side", metavar="F1,F2",
                       help="--compare-overhead, --plan-effect: start one server per setting once and keep both up "
                       "(on one GPU, a server starts in 75-110 s); F1 and F2 are the first and the second "
                       "server's --mem-fraction-static (the second sees the first's memory as taken, so F2 is "
                       "larger); add --max-total-tokens to --server-flags to give both the same KV cache")
    modes.add_argument("--model", type=Path, help="--compare-overhead or --plan-effect on this model instead of the "
                       "test bed (with --adapter-dir)")
    modes.add_argument("--adapter-dir", type=Path, help="with --model: a folder of adapter folders, served by name")
    modes.add_argument("--server-flags", default="",
                       help="--compare-overhead, --plan-effect: more SGLang flags, one string "
                       "(e.g. \"--attention-backend triton --max-total-tokens 65536\")")
    modes.add_argument("--start-timeout", type=float, default=600.0,
                       help="--compare-overhead, --plan-effect: seconds a server may take to answer /health "
                       "(default 600)")
    modes.add_argument("--plan-effect", action="store_true",
                       help="serve the workload with SGLang's LRU (the test bed, or --model), make a plan from its "
                       "access log (advise --plan, for --slots), serve it again with the plan, and again in --rounds "
                       "pairs of alternating order; print predicted and measured gpu hit rates, slot loads and "
                       "slot-load time, the hot adapters' TTFT p95, the plan's figures as shares of LRU's, and chart "
                       "them in --out")
    modes.add_argument("--stub", action="store_true", help="the generator's send-time accuracy against an instant stub")
    modes.add_argument("--stub-rate", type=float, default=50.0, help="requests per second for --stub")
    modes.add_argument("--advise-scale", type=int, metavar="N",
                       help="time lora-telemetry advise, and advise --plan for 8 slots, on a synthetic access "
                            "log of N batches")
    modes.add_argument("--hooks", action="store_true", help="cost per call of the hot-path hooks")
    modes.add_argument("--scrape", action="store_true", help="render time of /metrics at 100, 1,000, 10,000 adapters")
    modes.add_argument("--scales", default="100,1000,10000", help="adapter counts for --scrape")
    modes.add_argument("--churn", type=float, default=0.1, help="share of adapters changing between scrapes")
    modes.add_argument("--live-scrape", type=int, metavar="N",
                       help="start the test-bed server, give it N adapters that each served a request, time /metrics")
    modes.add_argument("--scrapes", type=int, default=20, help="scrapes timed by --live-scrape")
    modes.add_argument("--scrape-stall", type=int, metavar="N",
                       help="with N adapters' series on the test-bed server, TTFT p99 with and without a scrape "
                       "every second, in --rounds pairs of --duration seconds, against round-to-round noise")
    bench.set_defaults(run=_bench, extra="bench")

    advise = sub.add_parser(
        "advise", help="how many adapter slots the recorded traffic needs",
        description="Replay an access log (LORA_TELEMETRY_ACCESS_LOG, or lora-telemetry bench --record) "
                    "through SGLang's adapter pool at every slot count from 2 to one per adapter, and the "
                    "host tier at every --max-loaded-loras; print gpu and host hit rates and slot loads per "
                    "1,000 batches, per adapter and overall, recommend the smallest settings reaching "
                    "--target, and draw the miss-ratio curves as a PNG. LRU takes one pass for all sizes; "
                    "FIFO is replayed once per size. Given one access log per replica of a fleet, replay "
                    "their requests under routing policies (recorded, round-robin, random, adapter-affine) for "
                    "--replicas counts and every slot count, and name the cheapest fleet reaching --target.")
    advise.add_argument("files", type=Path, nargs="+", metavar="FILE",
                        help="the access log; several: one per replica of a fleet")
    advise.add_argument("--target", type=float, default=0.95, help="gpu and host hit rate to reach (default 0.95)")
    advise.add_argument("--policy", choices=("lru", "fifo"),
                        help="eviction policy to replay (default: the recorded pool's, else lru)")
    advise.add_argument("--partial", action="store_true",
                        help="analyse what was read before a corrupt or cut-off line instead of failing")
    advise.add_argument("--chart", type=Path, help="PNG for the miss-ratio curves (default: FILE with .png)")
    advise.add_argument("--json", type=Path, help="also write every figure as JSON")
    advise.add_argument("--top", type=int, default=15, help="adapters in the per-adapter table (default 15)")
    advise.add_argument("--plan", type=Path, metavar="OUT",
                        help="instead, write a pin plan to OUT: which adapters to pin, to preload, and which "
                             "priorities to set, chosen by replaying the recording, with the gpu and host hit "
                             "rates it predicts beside the recording's own")
    advise.add_argument("--slots", type=int, help="with --plan: the slot budget (default: the recorded pool's)")
    advise.add_argument("--preload", type=int, metavar="N",
                        help="with --plan: preload the N most requested adapters (default: all recorded)")
    fleet = advise.add_argument_group("fleets (several access logs)")
    fleet.add_argument("--replicas", metavar="N,N,...", help="replica counts to try (default 1 to 4, and the recorded)")
    fleet.add_argument("--seed", type=int, default=0, help="seed of the random routing")
    fleet.add_argument("--spill", type=float, default=1.25,
                       help="adapter-affine: a home replica holding this many times its fair share of the last "
                            "--window requests is busy, and the request goes to the least loaded (default 1.25)")
    fleet.add_argument("--window", type=int, default=32, help="adapter-affine: requests counted as load (default 32)")
    advise.set_defaults(run=_advise, extra="bench")

    top = sub.add_parser(
        "top", help="a live view of a server's hottest adapters, from its /metrics",
        description="Scrapes URL/metrics every --interval seconds and shows the hottest adapters: requests per "
        "second, requests served, gpu and host hit rates, TTFT p95 and the phase that takes the largest share "
        "of it, and thrash reloads, over the last interval; above them the pool's slots, evictions per second "
        "and the share of slot loads that were thrash. Ctrl-C leaves. --once prints one interval and exits "
        "(for scripts).")
    top.add_argument("url", help="the SGLang server, e.g. http://127.0.0.1:30000 (run with --enable-metrics)")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between scrapes (default 2)")
    top.add_argument("--limit", type=int, default=15, help="adapters shown (default 15)")
    top.add_argument("--once", action="store_true", help="print one interval's table and exit")
    top.set_defaults(run=_top, extra="top")

    doctor = sub.add_parser(
        "doctor", help="SGLang's version and whether it is supported, each hook, the series lost to a missing one",
        description="Checks the installation: the SGLang version against the supported range, the plugin's "
        "entry point, the configuration, and for each hook whether its target exists in the installed "
        "SGLang and which series are lost if not. Exits 1 when something is missing or unsupported.")
    doctor.add_argument("--json", action="store_true", help="print the report as JSON (for scripts)")
    doctor.set_defaults(run=_doctor)

    dashboards = sub.add_parser(
        "dashboards", help="write the Grafana dashboard and the Prometheus rules into DIR",
        description="Writes the Grafana dashboard (JSON and a provisioning file), the Prometheus recording and "
        "alerting rules with their promtool tests, and an example scrape configuration into DIR.")
    dashboards.add_argument("dir", type=Path)
    dashboards.set_defaults(run=_dashboards)

    testbed = sub.add_parser("testbed", help="the tiny local model and adapters, and SGLang on the CPU")
    tb = testbed.add_subparsers(dest="testbed_command", required=True)
    make = tb.add_parser("make", help="write the tiny model and N LoRA adapters into DIR (offline, seeded, cached)",
                         description="Without --shape: the tiny CPU model and adapters of ranks 4 and 8. With "
                         "--shape: a model of a real model's dimensions with random bf16 weights (generated on "
                         "the GPU where there is one) and adapters of --rank on all seven projections, for "
                         "SGLang on a GPU. Either way nothing is downloaded and a complete bed is reused.")
    make.add_argument("dir", type=Path)
    make.add_argument("--adapters", type=int, help="number of adapters (default 8; 16 with --shape)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--shape", help="a real model's dimensions: llama3-8b (16 GB), llama2-7b, llama3-1b")
    make.add_argument("--rank", type=int, default=16, help="with --shape: every adapter's rank (default 16)")
    for dim in ("layers", "hidden", "intermediate", "heads", "kv-heads"):
        make.add_argument(f"--{dim}", type=int, help=f"with --shape: replace the shape's {dim.replace('-', ' ')}")
    make.set_defaults(run=_testbed_make, extra="testbed")
    serve = tb.add_parser("serve", help="start stock sglang.launch_server on DIR's model; other flags go to SGLang",
                          description="Starts python -m sglang.launch_server with the test bed's model, CPU "
                          "defaults and --enable-lora --enable-metrics. Any further flags are passed to SGLang "
                          "and win over the defaults, e.g. --max-loras-per-batch 4 --lora-paths qa=DIR/adapters/qa.")
    serve.add_argument("dir", type=Path)
    serve.set_defaults(run=_testbed_serve, passthrough=True, extra="testbed")
    fleet = tb.add_parser("fleet", help="start N test-bed servers behind SMG, SGLang's gateway, until Ctrl-C",
                          description="Makes the test bed in DIR if needed, starts --replicas SGLang servers on "
                          "the CPU with every adapter (each writing its own access log into DIR/fleet) and SMG "
                          "in front of them with --policy, then prints the gateway's URL, a Prometheus scrape "
                          "job for every replica and the fleet advise command, and serves until Ctrl-C. Further "
                          "flags go to every SGLang server.")
    fleet.add_argument("dir", type=Path)
    fleet.add_argument("--replicas", type=int, default=2, help="SGLang servers (default 2)")
    fleet.add_argument("--policy", default="round_robin", help="SMG's routing policy (default round_robin; also "
                       "random, cache_aware, power_of_two, consistent_hashing, least_load)")
    fleet.add_argument("--adapters", type=int, default=8, help="adapters of a new test bed (default 8)")
    fleet.add_argument("--slots", type=int, default=4, help="pool slots per server, --max-loras-per-batch (default 4)")
    fleet.set_defaults(run=_testbed_fleet, passthrough=True, extra="fleet")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    try:
        return args.run(args, extra) if getattr(args, "passthrough", False) else args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in _EXTRA_MODULES or not getattr(args, "extra", None):
            raise
        extra = "fleet" if error.name == "smg" else args.extra  # demo --replicas needs the gateway
        print(f"lora-telemetry {args.command} needs the [{extra}] extra ({error.name} is missing): "
              f"pip install 'lora-telemetry[{extra}]'", file=sys.stderr)
        return 2
    except (ValueError, OSError) as error:  # bad input: say what, not where
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
