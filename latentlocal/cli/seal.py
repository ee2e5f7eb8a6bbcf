"""``latentlocal seal extract|inspect``: make a SEAL vector from a dataset, look inside one."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from latentlocal.cli.common import add_model_args, open_engine
from latentlocal.errors import LatentLocalError
from latentlocal.progress import ProgressBar


def add_seal_parser(sub: Any) -> None:
    seal = sub.add_parser("seal", help="SEAL steering vectors: extract one from traces, inspect one")
    ssub = seal.add_subparsers(dest="seal_command", metavar="{extract,inspect,sweep}")
    seal.set_defaults(handler=lambda args: _usage(seal))

    ex = ssub.add_parser(
        "extract",
        help="generate traces on a dataset and make a SEAL vector (.gguf + .json manifest)",
        description="Generate reasoning traces, label their thoughts, capture the residual stream at "
        "the delimiter before each thought and write S = mean(execution) - mean(reflection, "
        "transition) as a llama.cpp control vector. Traces and states are kept in <out>.work/ so "
        "a rerun resumes.",
    )
    ex.add_argument("--data", required=True, help="JSONL file with a question field (e.g. GSM8K train)")
    ex.add_argument("--out", required=True, help="output .gguf (the manifest goes beside it as .json)")
    ex.add_argument("--limit", type=int, default=50, help="problems to use (default 50)")
    ex.add_argument("--offset", type=int, default=0, help="skip this many problems first (default 0)")
    ex.add_argument("--layer", type=int, default=None,
                    help="0-based block to steer (= direction.N = l_out-N); default: the paper's "
                    "relative depth, round(20/28 * n_layer) - 1")
    ex.add_argument("--all-layers", action="store_true",
                    help="capture every block in the same pass, so another --layer can be chosen later "
                    "without new traces")
    ex.add_argument("--elicit", choices=["none", "cue"], default="none",
                    help="cue: force 'Wait,' / 'Alternatively,' at some delimiters and label those "
                    "thoughts by the cue (for models that rarely reflect on their own)")
    ex.add_argument("--cue-rate", type=float, default=0.3,
                    help="fraction of delimiters that get a cue with --elicit cue (default 0.3)")
    ex.add_argument("--cue-select", choices=["propensity", "random"], default="propensity",
                    help="where cues go: where the model leans most towards them (default) or at random")
    ex.add_argument("--max-tokens", type=int, default=None,
                    help="new tokens per trace (default 512; on thinking models 10000, as the paper's "
                    "code allows, capped to --n-ctx minus 256: raise --n-ctx for long traces)")
    ex.add_argument("--temperature", type=float, default=0.0,
                    help="sampling temperature for traces (default 0 = greedy; higher elicits variety)")
    ex.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ex.add_argument("--min-thoughts", type=int, default=5,
                    help="fewest execution and reflection/transition thoughts to make a vector (default 5)")
    ex.add_argument("--question-field", default="question", help="JSON field holding the question")
    ex.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_args(ex)
    ex.set_defaults(handler=cmd_extract)

    ins = ssub.add_parser("inspect", help="show a vector's layers, norms and manifest")
    ins.add_argument("path", help="a control-vector .gguf")
    ins.add_argument("--json", action="store_true", help="one JSON object")
    ins.set_defaults(handler=cmd_inspect)

    sw = ssub.add_parser(
        "sweep", help="measure always-on scales on a dataset slice and record the best in the manifest",
        description="Run the vector always-on (as llama-cli --control-vector-scaled applies it) at each "
        "scale and at 0, greedily; the recommended scale is the one with the fewest reasoning tokens "
        "among those at least as accurate as unsteered. Results go to <vector>.sweep.jsonl as they "
        "finish, so a rerun resumes. Use a slice you do not report on.")
    sw.add_argument("vector", help="a SEAL vector .gguf with its manifest")
    sw.add_argument("--data", required=True, help="JSONL with question and answer fields")
    sw.add_argument("--scales", default="0.25,0.5,1", help="comma-separated scales (default 0.25,0.5,1)")
    sw.add_argument("--limit", type=int, default=30, help="problems (default 30)")
    sw.add_argument("--offset", type=int, default=0, help="skip this many problems first")
    sw.add_argument("--max-tokens", type=int, default=320, help="new tokens per answer (default 320)")
    add_model_args(sw)
    sw.set_defaults(handler=cmd_sweep)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def cmd_extract(args: argparse.Namespace) -> int:
    from latentlocal.events import Progress, Summary
    from latentlocal.methods.seal import ExtractConfig, extract
    from latentlocal.sampling import SamplingConfig

    cfg = ExtractConfig(
        data=args.data, out=args.out, limit=args.limit, offset=args.offset, layer=args.layer,
        all_layers=args.all_layers, elicit=args.elicit, cue_rate=args.cue_rate,
        cue_select=args.cue_select, max_tokens=args.max_tokens,
        sampling=SamplingConfig(temperature=args.temperature, top_k=40 if args.temperature > 0 else 0,
                                top_p=0.95 if args.temperature > 0 else 1.0),
        seed=args.seed, min_thoughts=args.min_thoughts, question_field=args.question_field,
    )
    engine = open_engine(args)
    bar = None if args.quiet else ProgressBar(unit="traces")
    summary = None
    try:
        for ev in extract(engine, cfg):
            if isinstance(ev, Progress) and bar is not None:
                bar.update(ev.done, ev.what, new="(done earlier)" not in ev.what, total=ev.total)
            elif isinstance(ev, Summary):
                summary = ev
    finally:
        if bar is not None:
            bar.close()
    if summary is None:
        raise LatentLocalError("extraction was interrupted; rerun the same command to resume")
    x = summary.extra
    c = x["counts"]
    print(f"wrote {x['path']} (block {x['layer']}, |S| = {x['norm']:.3f}) and its manifest")
    print(f"thoughts: {c['execution']} execution, {c['reflection']} reflection, {c['transition']} "
          f"transition; {x['new']} new traces, {x['resumed']} reused from {x['work']}")
    if x["gen_s"] > 0:
        print(f"time: {summary.elapsed_s:.1f}s (generation {x['gen_s']:.1f}s, capture {x['capture_s']:.1f}s "
              f"-> capture overhead {(x['gen_s'] + x['capture_s']) / x['gen_s']:.2f}x)")
    return 0


def inspect_vector(path: str) -> dict[str, Any]:
    """What ``seal inspect`` shows, as a dict."""
    import numpy as np

    from latentlocal.controlvector import manifest_path
    from latentlocal.methods.seal import load_vector

    cv, manifest = load_vector(path)
    return {
        "path": str(path),
        "model_hint": cv.model_hint,
        "layer_count": cv.n_layer,
        "n_embd": cv.n_embd,
        "layers": cv.layers,
        "norms": {str(il): float(np.linalg.norm(cv.directions[il])) for il in cv.layers},
        "manifest_path": str(manifest_path(path)) if manifest is not None else None,
        "manifest": manifest,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    from latentlocal.controlvector import manifest_section

    info = inspect_vector(args.path)
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"{info['path']}: control vector for '{info['model_hint'] or '(no hint)'}', n_embd {info['n_embd']}, "
          f"layer_count {info['layer_count'] if info['layer_count'] is not None else '(unknown)'}")
    for il in info["layers"]:
        print(f"  direction.{il} (added to the output of block {il}): norm {info['norms'][str(il)]:.4f}")
    m = info["manifest"]
    if m is None:
        print("  no manifest beside it")
        return 0
    print(f"manifest {info['manifest_path']}:")
    # the manifest is a hand-editable JSON file: a field of another type is shown as it is
    model = m.get("model") or {}
    counts = manifest_section(m, "counts").get("thoughts") or {}
    elic = m.get("elicitation") or {}
    rows = [
        ("method", m.get("method")),
        ("layer", m.get("layer")),
        ("alpha", m.get("alpha")),
        ("recommended always-on scale", m.get("recommended_scale")),
        ("model", f"{model.get('name')} ({model.get('arch')}, {model.get('n_layer')} blocks, "
                  f"n_embd {model.get('n_embd')}, {model.get('file')})" if isinstance(model, dict) and model
         else model or None),
        ("model sha256", manifest_section(m, "model").get("sha256")),
        ("dataset", f"{m.get('dataset')} (limit {m.get('limit')}, {m.get('problems')} problems)"),
        ("thoughts", ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict)
         else counts or None),
        ("elicitation", ", ".join(f"{k} {v}" for k, v in elic.items() if k != "cues") if isinstance(elic, dict)
         else elic or None),
        ("mean state norm", m.get("mean_state_norm")),
        ("created", m.get("created")),
    ]
    for k, v in rows:
        if v is not None:
            print(f"  {k}: {v}")
    by_layer = m.get("norm_by_layer") or {}
    if len(by_layer) > 1:
        print("  |S| by block: " + " ".join(f"{il}:{v:.2f}" for il, v in by_layer.items()))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from latentlocal.eval.seal_sweep import parse_scales, sweep

    scales = parse_scales(args.scales)
    engine = open_engine(args)
    bar = ProgressBar(unit="answers")
    try:
        res = sweep(engine, args.vector, args.data, scales, limit=args.limit, offset=args.offset,
                    max_tokens=args.max_tokens, on_problem=lambda n, t, new: bar.update(n, new=new, total=t))
    finally:
        bar.close()
    print(f"{res['model']}, {res['data']} [{res['offset']}:{res['offset'] + res['limit']}), "
          f"always-on, max {res['max_tokens']} tokens")
    print("scale  accuracy  reasoning tokens")
    for r in res["rows"]:
        print(f"{r['scale']:>5g}  {r['accuracy']:8.1%}  {r['mean_reasoning_tokens']:16.1f}")
    print(f"recommended scale {res['recommended_scale']:g} written to the manifest")
    return 0
