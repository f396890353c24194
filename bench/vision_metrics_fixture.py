#!/usr/bin/env python3
"""Reference values for ferrolab's detection and segmentation metrics.

Writes seeded inputs and the values the trusted implementations compute on them into
crates/vision/tests/fixtures/, which crates/vision/tests/metrics_reference.rs reads (no Python
at test time):

- COCO box detection (pycocotools COCOeval, iouType bbox): four scenes of a few dozen images
  that cover iscrowd=1, annotation `area` unlike w*h (and exactly on the 32^2 / 96^2 range
  bounds), images without ground truth (with and without detections), more than 100 detections
  of one class in an image, tied scores (within and across images), categories with no ground
  truth (-1), area ranges with no ground truth (-1), detections of unlisted categories, zero-size boxes and a ground truth with id 0.
  Expected: the 12 stats, the per-class AP, the full recall array and the precision array
  averaged over the 101 recall thresholds (to keep the file small).
- Segmentation (medpy 0.5.2 metric.binary dc / jc / hd95, connectivity 1): 2-D slices and 3-D
  volumes with classes 0..3, isotropic and anisotropic spacing, objects touching the array
  edge, single voxels, a one-slice volume, empty predictions and empty labels.

`--bench DIR` also writes a large COCO set (5000 images, ~50k detections, 80 classes) into DIR
and prints pycocotools' time on it; run_vision_metrics_fixture.sh times ferrolab on the same
files.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "crates", "vision", "tests", "fixtures")


def r2(x):
    # Two decimals: every coordinate is then parsed to the same double by any JSON reader.
    return float(round(float(x), 2))


# ---------------------------------------------------------------------------------------------
# COCO


def coco_scene(seed, n_images, ties, crowd_rate, big_image, small_only=False):
    rng = np.random.RandomState(seed)
    cats = [{"id": c, "name": "c%d" % c} for c in (1, 2, 3, 5, 9)]
    gt_cats = [1, 2, 3]  # 5 and 9 never get ground truth: their AP is -1
    ids = list(rng.permutation(np.arange(1, n_images + 1) * 3 + 100))
    images = [{"id": int(i), "width": 640, "height": 480} for i in ids]
    anns, dets = [], []
    next_id = 1
    score_pool = np.array([0.9, 0.75, 0.5, 0.5, 0.3])
    for k, img in enumerate(images):
        iid = img["id"]
        kind = k % 7
        n_gt = 0 if kind == 3 or kind == 6 else int(rng.randint(1, 9))
        boxes = []
        for _ in range(n_gt):
            top = 30 if small_only else 300
            w = float(np.exp(rng.uniform(np.log(3), np.log(top))))
            h = float(np.exp(rng.uniform(np.log(3), np.log(top * 5 / 6))))
            x, y = rng.uniform(0, 640 - min(w, 600)), rng.uniform(0, 480 - min(h, 450))
            bb = [r2(x), r2(y), r2(w), r2(h)]
            area = bb[2] * bb[3]
            u = rng.rand() + small_only
            if u < 0.3:
                area = area * rng.uniform(0.3, 1.0)  # a mask area, below w*h
            elif u < 0.36:
                area = 1024.0  # exactly on the small/medium bound (both ranges include it)
            elif u < 0.40:
                area = 9216.0
            crowd = int(rng.rand() < crowd_rate)
            cat = int(rng.choice(gt_cats))
            anns.append({"id": next_id, "image_id": iid, "category_id": cat, "bbox": bb,
                         "area": r2(area), "iscrowd": crowd})
            next_id += 1
            boxes.append((bb, cat, crowd))
        if kind == 6:
            continue  # an image with neither ground truth nor detections
        for bb, cat, crowd in boxes:
            n = 1 + int(rng.rand() < 0.3) + (int(rng.randint(2, 6)) if crowd else 0)
            for _ in range(n):
                if rng.rand() < 0.15:
                    continue
                j = rng.normal(0, 0.08, 4) * np.array([bb[2], bb[3], bb[2], bb[3]])
                w, h = max(bb[2] + j[2], 0.5), max(bb[3] + j[3], 0.5)
                if crowd:  # pieces inside the crowd region
                    w, h = bb[2] * rng.uniform(0.2, 0.6), bb[3] * rng.uniform(0.2, 0.6)
                    j[0] = rng.uniform(0, bb[2] - w)
                    j[1] = rng.uniform(0, bb[3] - h)
                c = cat if rng.rand() < 0.9 else int(rng.choice([1, 2, 3, 5]))
                dets.append({"image_id": iid, "category_id": c,
                             "bbox": [r2(bb[0] + j[0]), r2(bb[1] + j[1]), r2(w), r2(h)],
                             "score": None})
        for _ in range(int(rng.randint(0, 5))):  # false positives, also on empty images
            w, h = rng.uniform(2, 200), rng.uniform(2, 200)
            dets.append({"image_id": iid, "category_id": int(rng.choice([1, 2, 3, 5])),
                         "bbox": [r2(rng.uniform(0, 600)), r2(rng.uniform(0, 400)), r2(w), r2(h)],
                         "score": None})
    if big_image:
        iid = images[0]["id"]
        base = [a for a in anns if a["image_id"] == iid]
        for i in range(150):  # > 100 detections of one class in one image
            src = base[i % len(base)]["bbox"] if base else [10, 10, 50, 50]
            j = rng.normal(0, 0.2, 4) * 20
            dets.append({"image_id": iid, "category_id": 1,
                         "bbox": [r2(src[0] + j[0]), r2(src[1] + j[1]),
                                  r2(max(src[2] + j[2], 1)), r2(max(src[3] + j[3], 1))],
                         "score": None})
    # Odd ones: a zero-size box, a detection of a category the ground truth does not list, and
    # a ground truth with id 0 (pycocotools counts a match to it as no match).
    dets.append({"image_id": images[1]["id"], "category_id": 2, "bbox": [5.0, 5.0, 0.0, 10.0],
                 "score": None})
    dets.append({"image_id": images[1]["id"], "category_id": 42, "bbox": [5.0, 5.0, 10.0, 10.0],
                 "score": None})
    for a in anns:
        if not a["iscrowd"]:
            a["id"] = 0
            dets.append({"image_id": a["image_id"], "category_id": a["category_id"],
                         "bbox": list(a["bbox"]), "score": 0.99})
            break
    for d in dets:
        if d["score"] is None:
            if ties:
                d["score"] = float(rng.choice(score_pool))
            else:
                d["score"] = r2(rng.uniform(0.01, 1.0)) if rng.rand() < 0.5 else \
                    float(rng.choice(score_pool))
    order = rng.permutation(len(dets))
    dets = [dets[i] for i in order]
    gt = {"info": {"description": "ferrolab metrics fixture seed %d" % seed},
          "images": images, "annotations": anns, "categories": cats}
    return gt, dets


def run_cocoeval(gt_path, dt_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO(gt_path)
        cd = cg.loadRes(dt_path)
        ev = COCOeval(cg, cd, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_expected(ev):
    p = ev.eval["precision"]  # T R K A M
    r = ev.eval["recall"]  # T K A M
    per_class = []
    for k, cid in enumerate(ev.params.catIds):
        s = p[:, :, k, 0, -1]
        per_class.append([int(cid), float(np.mean(s[s > -1])) if (s > -1).any() else -1.0])
    # Mean over recall thresholds where defined (-1 stays -1: a (t,k,a,m) is all -1 or none).
    pm = np.where((p > -1).all(axis=1), p.mean(axis=1), -1.0)
    return {
        "stats": [float(x) for x in ev.stats],
        "cat_ids": [int(c) for c in ev.params.catIds],
        "per_class_ap": per_class,
        "recall_tkam": np.round(r, 12).ravel().tolist(),
        "precision_mean_over_r_tkam": np.round(pm, 12).ravel().tolist(),
    }


def write_coco(out):
    scenes = {
        "mixed": dict(seed=1, n_images=40, ties=False, crowd_rate=0.08, big_image=True),
        "ties": dict(seed=2, n_images=24, ties=True, crowd_rate=0.0, big_image=False),
        "crowd": dict(seed=3, n_images=30, ties=False, crowd_rate=0.3, big_image=True),
        # Only small ground truth: medium and large AP / AR are -1.
        "small": dict(seed=4, n_images=20, ties=False, crowd_rate=0.05, big_image=False,
                      small_only=True),
    }
    expected = {}
    for name, kw in scenes.items():
        gt, dt = coco_scene(**kw)
        gp = os.path.join(out, "coco_%s_gt.json" % name)
        dp = os.path.join(out, "coco_%s_dt.json" % name)
        with open(gp, "w") as f:
            json.dump(gt, f, separators=(",", ":"))
        with open(dp, "w") as f:
            json.dump(dt, f, separators=(",", ":"))
        ev = run_cocoeval(gp, dp)
        expected[name] = coco_expected(ev)
        print("coco %-6s images %3d gt %4d dt %4d  AP %.4f AP50 %.4f" % (
            name, len(gt["images"]), len(gt["annotations"]), len(dt), ev.stats[0],
            ev.stats[1]))
    with open(os.path.join(out, "coco_expected.json"), "w") as f:
        json.dump(expected, f, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Segmentation


def blob(shape, rng, center=None, radii=None):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    c = center if center is not None else [rng.uniform(0, n) for n in shape]
    r = radii if radii is not None else [rng.uniform(1.0, max(1.5, n / 3)) for n in shape]
    return sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grids, c, r)) <= 1.0


def seg_volume(shape, rng, case):
    from scipy import ndimage
    label = np.zeros(shape, np.uint8)
    for cls in (1, 2, 3):
        for _ in range(int(rng.randint(1, 3))):
            label[blob(shape, rng)] = cls
    if case == "edge":  # an object cut by the array's edge
        c = [0.0] + [n / 2 for n in shape[1:]]
        label[blob(shape, rng, center=c, radii=[n / 3 + 1 for n in shape])] = 1
    if case == "dot":  # single voxels
        label[label == 2] = 0
        label[tuple(int(rng.randint(0, n)) for n in shape)] = 2
    if case == "nolabel3":
        label[label == 3] = 0
    pred = label.copy()
    for cls in (1, 2, 3):  # boundary errors: dilate or erode each class, shift some
        m = label == cls
        op = rng.randint(0, 4)
        if op == 0:
            m2 = ndimage.binary_dilation(m)
        elif op == 1:
            m2 = ndimage.binary_erosion(m)
        elif op == 2:
            m2 = np.roll(m, int(rng.randint(-2, 3)), axis=int(rng.randint(0, len(shape))))
        else:
            m2 = m
        pred[m & ~m2] = 0
        pred[m2] = cls
    noise = rng.rand(*shape) < 0.01  # scattered false positives far from objects
    pred[noise] = rng.randint(1, 4, size=int(noise.sum()))
    if case in ("nopred2", "edge"):
        pred[pred == 2] = 0
    if case == "dot":
        pred[tuple(int(rng.randint(0, n)) for n in shape)] = 2
    return label, pred


def write_seg(out):
    from medpy.metric import binary
    import medpy
    rng = np.random.RandomState(13)
    specs = []
    cases = ["plain", "edge", "dot", "nopred2", "nolabel3"]
    for i in range(15):  # 2-D slices
        shape = (int(rng.randint(20, 48)), int(rng.randint(20, 48)))
        spacing = [1.0, 1.0] if i % 3 else [0.7, 1.3]
        specs.append((shape, spacing, cases[i % len(cases)]))
    for i in range(15):  # 3-D volumes, mostly anisotropic (thick slices, as in cardiac MRI)
        shape = (int(rng.randint(4, 12)), int(rng.randint(14, 30)), int(rng.randint(14, 30)))
        spacing = [[1.0, 1.0, 1.0], [5.0, 1.5625, 1.5625], [10.0, 0.8, 1.1]][i % 3]
        specs.append((shape, spacing, cases[i % len(cases)]))
    specs.append(((1, 17, 19), [2.0, 1.0, 1.0], "plain"))  # one slice: every voxel is surface
    volumes = []
    for shape, spacing, case in specs:
        label, pred = seg_volume(shape, rng, case)
        classes = {}
        for cls in (1, 2, 3):
            p, l = pred == cls, label == cls
            # Both empty: medpy's 0/0 is NaN under NumPy 2 (not its documented 1.0); no value.
            dc, jc = float(binary.dc(p, l)), float(binary.jc(p, l))
            e = {"dc": dc if np.isfinite(dc) else None, "jc": jc if np.isfinite(jc) else None,
                 "label_empty": bool(not l.any()), "pred_empty": bool(not p.any())}
            if p.any() and l.any():
                e["hd95"] = float(binary.hd95(p, l, voxelspacing=spacing, connectivity=1))
            else:
                e["hd95"] = None  # medpy raises on an empty object
            classes[str(cls)] = e
        volumes.append({
            "case": case, "shape": list(shape), "spacing": spacing,
            "label": "".join(map(str, label.ravel())),
            "pred": "".join(map(str, pred.ravel())),
            "classes": classes,
        })
    # The CLI / SegAccumulator rule over all volumes, from medpy's per-volume values.
    summary, skipped = {}, 0
    for cls in ("1", "2", "3"):
        d, j, h = [], [], []
        for v in volumes:
            e = v["classes"][cls]
            if e["label_empty"]:
                skipped += 1
                continue
            d.append(0.0 if e["pred_empty"] else e["dc"])
            j.append(0.0 if e["pred_empty"] else e["jc"])
            if e["hd95"] is not None:
                h.append(e["hd95"])
        summary[cls] = {"dice": float(np.mean(d)), "iou": float(np.mean(j)),
                        "hd95": float(np.mean(h)) if h else None, "volumes": len(d)}
    summary["mean"] = {k: float(np.mean([summary[c][k] for c in ("1", "2", "3")]))
                       for k in ("dice", "iou", "hd95")}
    summary["skipped"] = skipped
    doc = {"medpy": medpy.__version__ if hasattr(medpy, "__version__") else "0.5.2",
           "volumes": volumes, "summary": summary}
    with open(os.path.join(out, "seg_cases.json"), "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    print("seg volumes %d (2-D %d, 3-D %d), skipped pairs %d" % (
        len(volumes), sum(len(v["shape"]) == 2 for v in volumes),
        sum(len(v["shape"]) == 3 for v in volumes), skipped))


# ---------------------------------------------------------------------------------------------
# Large COCO set for timing


def write_bench(dirpath):
    rng = np.random.RandomState(99)
    n_img, n_cat = 5000, 80
    images = [{"id": i + 1} for i in range(n_img)]
    cats = [{"id": c + 1, "name": "c%d" % (c + 1)} for c in range(n_cat)]
    anns, dets = [], []
    aid = 1
    for img in images:
        for _ in range(int(rng.poisson(7))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(400), 2))
            x, y = rng.uniform(0, 600), rng.uniform(0, 450)
            bb = [r2(x), r2(y), r2(w), r2(h)]
            cat = int(rng.randint(1, n_cat + 1))
            anns.append({"id": aid, "image_id": img["id"], "category_id": cat, "bbox": bb,
                         "area": r2(bb[2] * bb[3] * rng.uniform(0.5, 1.0)),
                         "iscrowd": int(rng.rand() < 0.01)})
            aid += 1
            for _ in range(int(rng.randint(0, 3))):
                j = rng.normal(0, 0.1, 4) * np.array([w, h, w, h])
                dets.append({"image_id": img["id"], "category_id": cat,
                             "bbox": [r2(x + j[0]), r2(y + j[1]), r2(max(w + j[2], 1)),
                                      r2(max(h + j[3], 1))],
                             "score": r2(rng.rand())})
        for _ in range(int(rng.poisson(3))):
            dets.append({"image_id": img["id"], "category_id": int(rng.randint(1, n_cat + 1)),
                         "bbox": [r2(rng.uniform(0, 600)), r2(rng.uniform(0, 450)),
                                  r2(rng.uniform(4, 200)), r2(rng.uniform(4, 200))],
                         "score": r2(rng.rand())})
    os.makedirs(dirpath, exist_ok=True)
    gp, dp = os.path.join(dirpath, "gt.json"), os.path.join(dirpath, "dt.json")
    with open(gp, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    with open(dp, "w") as f:
        json.dump(dets, f)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        ev = run_cocoeval(gp, dp)
        times.append(time.perf_counter() - t0)
    with open(os.path.join(dirpath, "pycocotools_stats.json"), "w") as f:
        json.dump({"stats": [float(x) for x in ev.stats], "seconds": min(times)}, f)
    print("bench: %d images, %d gt, %d dt, 80 classes; pycocotools load+evaluate+accumulate+"
          "summarize %.2f s (best of 2)" % (n_img, len(anns), len(dets), min(times)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--bench", metavar="DIR", help="also write and time the large COCO set")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    write_coco(a.out)
    write_seg(a.out)
    total = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print("fixtures: %s (%.0f KB)" % (os.path.normpath(a.out), total / 1024))
    if a.bench:
        write_bench(a.bench)
    return 0


if __name__ == "__main__":
    sys.exit(main())
