"""vqkit features | probe | codebook | anomaly | similar: image analysis with a run's codes.

Each writes its JSON first, as a versioned result document (vqkit.runs.results); ``probe``,
``codebook`` and ``anomaly`` also leave theirs in the run folder (probe.json, codebook.json + pictures,
anomaly.json, names from vqkit.runs.layout) for ``vqkit report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vqkit.cli.common import add_device, add_run, parser
from vqkit.codec.files import write_bytes
from vqkit.data import DataError, load_dataset
from vqkit.runs import Run, RunError, layout, shipped
from vqkit.runs.results import write_result, write_result_file
from vqkit.visual import image_grid, save_png


def _scale(height: int) -> int:
    return max(1, 96 // max(height, 1))


def features_main(argv: list[str]) -> int:
    from vqkit.tasks.features import extract_features, save_features

    p = parser("features", "Per-image code grids, code histograms and pooled latents (.npz).")
    add_run(p)
    p.add_argument("--data", required=True, help="data spec")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz")
    p.add_argument("--max-images", type=int, help="use at most the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device, a.precision)
    data = load_dataset(a.data, channels=run.channels, max_images=a.max_images)
    feats = extract_features(run, data, a.batch_size)
    save_features(a.output, feats)
    what = (
        "latents only (quantization disabled)" if feats.histograms is None else "codes, histograms, latents"
    )
    print(f"wrote {a.output}: {len(feats)} images, {what}, latent dim {feats.latent_mean.shape[1]}")
    return 0


def probe_main(argv: list[str]) -> int:
    from vqkit.tasks.probe import ProbeSettings, format_probe_table, run_probes

    p = parser("probe", "Linear-probe and k-NN accuracy of code histograms, pooled latents and pixels.")
    add_run(p)
    p.add_argument("--train", required=True, help="labelled data spec the classifiers learn from")
    p.add_argument("--test", required=True, help="labelled data spec they are scored on")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--max-train", type=int, help="random subset of the training images")
    p.add_argument("--max-test", type=int, help="random subset of the test images")
    p.add_argument("-k", type=int, default=10, help="neighbours for k-NN (default 10)")
    p.add_argument("--pixel-size", type=int, default=16, help="side of the pixel baseline (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random subsets (default 0)")
    add_device(p)
    a = p.parse_args(argv)
    if a.k < 1 or a.pixel_size < 1:
        raise DataError("-k and --pixel-size must be >= 1")
    run = Run.load(a.run, a.device, a.precision)
    train = load_dataset(a.train, channels=run.channels)
    test = load_dataset(a.test, channels=run.channels)
    settings = ProbeSettings(
        k=a.k, max_train=a.max_train, max_test=a.max_test, pixel_size=a.pixel_size, seed=a.seed
    )
    result = {"run": str(a.run), "train": a.train, "test": a.test, **run_probes(run, train, test, settings)}
    if a.json:
        write_result_file(a.json, "probe", result)
    write_result(run.path, layout.PROBE_FILE, "probe", result)
    print(format_probe_table(result))
    for note in result["notes"]:
        print(f"note: {note}")
    return 0


def codebook_main(argv: list[str]) -> int:
    from vqkit.reports.plots import class_usage_png, usage_histogram_png
    from vqkit.tasks.codebook import code_tiles, codebook_summary, count_codes, tile_picture
    from vqkit.tasks.features import load_run_eval_set, sample_images

    p = parser("codebook", "Picture of every code's patch, most used first, and code usage.")
    add_run(p)
    p.add_argument("-o", "--output", type=Path, required=True, help="output PNG of the code patches")
    p.add_argument("--data", help="data to count usage on (default: the run's held-out data)")
    p.add_argument(
        "--max-images",
        type=int,
        default=10000,
        help="count on a random subset of this many images (default 10000)",
    )
    p.add_argument("--json", type=Path, help="also write the usage summary here")
    p.add_argument("--context", type=int, default=5, help="odd grid side the code is decoded in (default 5)")
    p.add_argument("--margin", type=int, help="pixels of neighbourhood around each tile (default f/2)")
    p.add_argument("--zoom", type=int, default=0, help="enlarge the picture this many times (0: automatic)")
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device, a.precision)
    if not run.model.quantizer.discrete:
        raise RunError(f"{a.run}: quantization is disabled in this run, so it has no codebook")
    if run.stages > 1:
        raise RunError(
            f"{a.run} is a residual VQ run ({run.stages} codebooks): vqkit codebook pictures one "
            "codebook; `vqkit eval` reports each stage's usage, perplexity and dead codes"
        )
    if a.data:
        data, described = sample_images(load_dataset(a.data, channels=run.channels), a.max_images), a.data
    else:
        data, described = load_run_eval_set(run, a.max_images)
    stats = count_codes(run, data)
    try:
        tiles = code_tiles(run, int(stats.order[0]), context=a.context, margin=a.margin)
    except ValueError as e:
        raise DataError(str(e)) from e
    picture = tile_picture(tiles, stats.order)
    if a.zoom < 0:
        raise DataError(f"--zoom must be >= 0, got {a.zoom}")
    zoom = a.zoom or max(1, 768 // picture.shape[1])
    tile_info = {
        "size": int(tiles.shape[1]),
        "context": a.context,
        "background_code": int(stats.order[0]),
        "columns": int(np.ceil(np.sqrt(len(tiles)))),
        "pad": 1,
        "zoom": zoom,
    }
    summary = codebook_summary(stats, described, tile_info)
    write_result(run.path, layout.CODEBOOK_FILE, "codebook", summary)
    if a.json:
        write_result_file(a.json, "codebook", summary)
    save_png(picture, a.output, scale=zoom)
    save_png(picture, shipped.output_path(run.path, layout.CODEBOOK_TILES), scale=zoom)
    write_bytes(shipped.output_path(run.path, layout.CODEBOOK_USAGE), usage_histogram_png(stats.counts))
    if stats.per_class is not None and stats.class_names is not None:
        shares = stats.per_class / np.maximum(stats.per_class.sum(1, keepdims=True), 1)
        png = class_usage_png(shares[:, stats.order], stats.class_names)
        write_bytes(shipped.output_path(run.path, layout.CODEBOOK_CLASSES), png)
    details = shipped.output_path(run.path, layout.CODEBOOK_FILE)
    print(
        f"wrote {a.output} ({len(tiles)} codes, {tiles.shape[1]}x{tiles.shape[2]} px each, most used "
        f"first); usage {summary['codebook_usage']:.3f}, perplexity {summary['perplexity']:.1f}, dead "
        f"{summary['dead_codes']} on {described}; details in {details}"
    )
    return 0


def anomaly_main(argv: list[str]) -> int:
    from vqkit.tasks.anomaly import anomaly_mask, anomaly_scores, anomaly_summary, load_prior_if_any
    from vqkit.tasks.features import sample_images

    p = parser(
        "anomaly",
        "Per-image anomaly scores (reconstruction error, quantization error, prior "
        "NLL) and their AUROC when the anomalous classes are named.",
    )
    add_run(p)
    p.add_argument("--data", required=True, help="data spec to score")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--normal-classes", help="comma-separated classes that are normal (others: anomalies)")
    group.add_argument("--anomaly-class", help="comma-separated classes that are anomalies")
    p.add_argument("--json", type=Path, help="also write the summary and the per-image scores here")
    p.add_argument("--max-images", type=int, help="score a random subset of this many images")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default 256)")
    add_device(p)
    a = p.parse_args(argv)
    run = Run.load(a.run, a.device, a.precision)
    data = sample_images(load_dataset(a.data, channels=run.channels), a.max_images)
    mask = None
    if a.normal_classes is not None or a.anomaly_class is not None:
        mask = anomaly_mask(data, normal_classes=a.normal_classes, anomaly_class=a.anomaly_class)
    prior, prior_note = load_prior_if_any(run)
    scores, notes = anomaly_scores(run, data.images, prior, a.batch_size)
    notes = ([prior_note] if prior_note else []) + notes
    summary = {
        "run": str(a.run),
        "data": a.data,
        "normal_classes": a.normal_classes,
        "anomaly_class": a.anomaly_class,
        **anomaly_summary(scores, mask),
        "notes": notes,
    }
    write_result(run.path, layout.ANOMALY_FILE, "anomaly", summary)
    if a.json:
        per_image: dict[str, Any] = {"names": list(data.names), **{k: v.tolist() for k, v in scores.items()}}
        if mask is not None:
            per_image["is_anomaly"] = mask.tolist()
        write_result_file(a.json, "anomaly", {**summary, "per_image": per_image})
    width = max(len(k) for k in scores)
    print(f"{'score':<{width}}  {'mean':>10}" + (f"  {'AUROC':>7}" if mask is not None else ""))
    for k, v in scores.items():
        line = f"{k:<{width}}  {float(v.mean()):>10.4g}"
        print(line + (f"  {summary['auroc'][k]:>7.4f}" if mask is not None else ""))
    for note in notes:
        print(f"note: {note}")
    return 0


def similar_main(argv: list[str]) -> int:
    from vqkit.tasks.features import extract_features
    from vqkit.tasks.retrieval import METRICS, rank

    p = parser("similar", "Retrieve the images whose code histograms are most like the query's.")
    add_run(p)
    p.add_argument("query", help="query image file (or data spec: its first image)")
    p.add_argument("--data", required=True, help="data spec to search")
    p.add_argument("-k", type=int, default=8, help="how many to retrieve (default 8)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output PNG: query, then the k nearest")
    p.add_argument("--metric", choices=METRICS, default="cosine", help="histogram similarity")
    p.add_argument(
        "--features",
        choices=("codes", "latents"),
        default="codes",
        help="compare code histograms (default) or pooled continuous latents",
    )
    p.add_argument("--json", type=Path, help="also write the ranking here")
    p.add_argument("--max-images", type=int, help="search at most the first N images")
    add_device(p)
    a = p.parse_args(argv)
    if a.k < 1:
        raise DataError(f"-k must be >= 1, got {a.k}")
    run = Run.load(a.run, a.device, a.precision)
    query = load_dataset(a.query, channels=run.channels, max_images=1)
    data = load_dataset(a.data, channels=run.channels, max_images=a.max_images)
    fq, fd = extract_features(run, query), extract_features(run, data)
    if a.features == "codes":
        if fq.histograms is None or fd.histograms is None:
            raise RunError(f"{a.run} has no codes (quantization disabled); use --features latents")
        order, scores = rank(fq.histograms[0], fd.histograms, a.k, a.metric, fq.latents[0], fd.latents)
    else:
        order, scores = rank(fq.latents[0], fd.latents, a.k, "cosine")
    ranking = [
        {"rank": r + 1, "index": int(i), "name": data.names[i], "similarity": float(s)}
        for r, (i, s) in enumerate(zip(order, scores, strict=True))
    ]
    picked = [query.images[0]] + [data.images[i] for i in order]
    save_png(image_grid([picked]), a.output, scale=_scale(max(im.shape[0] for im in picked)))
    doc = {
        "run": str(a.run),
        "query": a.query,
        "data": a.data,
        "features": a.features,
        "metric": a.metric if a.features == "codes" else "cosine",
        "results": ranking,
    }
    if a.json:
        write_result_file(a.json, "similar", doc)
    for r in ranking:
        print(f"{r['rank']:>3}  {r['similarity']:.4f}  {r['name']}")
    print(f"wrote {a.output} (query first, then the {len(ranking)} most similar)")
    return 0
