"""Label a folder of photos with Ray Data and the ferrovision Python binding.

    pip install "ray[data]" ferrovision-*.whl       # the wheel: python/ci.sh or maturin (python/README.md)
    python examples/ray_label_photos.py PHOTOS OUT --weights weights/default.safetensors \\
        --actors 2 --threads 1 --batch-size 16 --rules default

The pipeline: `read_binary_files` (the encoded files, decoded by ferrovision in the actors) →
`map_batches(Labeler)`: a pool of `--actors` actors, each holding one `fv.Model` whose thread pool has
`--threads` threads, each asking Ray for that many CPUs → `write_json` (one JSON object per photo: its
path, top class, score, rule labels and error). Size it as threads × actors = the cores Ray may use
(docs/scale-out.md).
"""

import argparse
import time

import ray


class Labeler:
    """One model per actor; `__call__` labels one batch of encoded files."""

    def __init__(self, weights, threads, rules, batch_size):
        import ferrovision as fv

        self.model = fv.Model(weights, threads=threads, batch_size=batch_size)
        self.rules = rules

    def __call__(self, batch):
        results = self.model.classify(list(batch["bytes"]), top_k=1, rules=self.rules)
        top = [r["predictions"][0] if r["predictions"] else None for r in results]
        return {
            "path": batch["path"],
            "class_id": [t["class_id"] if t else -1 for t in top],
            "label": [t["label"] if t else "" for t in top],
            "score": [t["score"] if t else 0.0 for t in top],
            "labels": [[label["label"] for label in r["labels"]] for r in results],
            # the error names the item as "<bytes i>"; the row's path says which file it was
            "error": [r["error"] or "" for r in results],
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", help="folder of photos (read recursively)")
    ap.add_argument("out", help="folder for the JSON output")
    ap.add_argument("--weights", default="weights/default.safetensors")
    ap.add_argument("--actors", type=int, default=2, help="model replicas (Ray actors)")
    ap.add_argument("--threads", type=int, default=1, help="threads of each actor's pool (and CPUs it reserves)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per map_batches call and forward pass")
    ap.add_argument("--rules", default="default", help='"default", a rules YAML, or "none"')
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    args = ap.parse_args()

    ray.init(num_cpus=args.num_cpus)
    # Reading the files is I/O (the actors decode them): the read tasks reserve no CPU, or with
    # threads × actors = every CPU they could never be scheduled and the pipeline would stall;
    # one at a time, since Ray starts a worker process per concurrent zero-CPU task.
    photos = ray.data.read_binary_files(
        args.photos,
        include_paths=True,
        num_cpus=0,
        concurrency=1,
        file_extensions=["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"],
    )
    labelled = photos.map_batches(
        Labeler,
        fn_constructor_kwargs={
            "weights": args.weights,
            "threads": args.threads,
            "rules": None if args.rules == "none" else args.rules,
            "batch_size": args.batch_size,
        },
        batch_size=args.batch_size,
        batch_format="numpy",
        concurrency=args.actors,
        num_cpus=args.threads,
    )
    start = time.perf_counter()
    labelled.write_json(args.out)
    secs = time.perf_counter() - start
    n = ray.data.read_json(args.out).count()
    print(f"labelled {n} photos in {secs:.2f} s ({n / secs:.1f} images/s) with {args.actors} actors "
          f"× {args.threads} threads, batches of {args.batch_size}")


if __name__ == "__main__":
    main()
