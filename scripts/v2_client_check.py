#!/usr/bin/env python3
"""Calls a KServe v2 server with NVIDIA's own client library (tritonclient.http), as any Triton
user would, and prints what it read as one JSON object (tests/serve.rs compares it with
`ferrovision classify`):

    v2_client_check.py URL MODEL IMAGE...

Health, server and model metadata, then one inference of every image as a BYTES input in the
binary tensor extension, asking for `probabilities` in binary and the top 3 of `logits` through
the classification extension, and once more with JSON tensors (binary_data=False; JSON strings
cannot hold raw bytes, so the images go as base64 there, as KServe's examples send them)."""
import base64
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = httpclient.InferenceServerClient(url=url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(),
        "metadata": client.get_model_metadata(model),
    }
    files = [open(p, "rb").read() for p in paths]
    for binary in (True, False):
        items = files if binary else [base64.b64encode(f).decode() for f in files]
        data = np.array(items, dtype=np.object_)
        image = httpclient.InferInput("image", [len(files)], "BYTES")
        image.set_data_from_numpy(data, binary_data=binary)
        outputs = [
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("logits", binary_data=binary, class_count=3),
        ]
        result = client.infer(model, [image], outputs=outputs, request_id="req-%d" % binary)
        probs = result.as_numpy("probabilities")
        top = result.as_numpy("logits")
        out["binary" if binary else "json"] = {
            "id": result.get_response()["id"],
            "probabilities": probs.astype(float).tolist(),
            "top3": [[x.decode() if isinstance(x, bytes) else x for x in row] for row in top.tolist()],
        }
    try:
        client.get_model_metadata("no_such_model")
        out["unknown_model"] = None
    except httpclient.InferenceServerException as e:
        out["unknown_model"] = {"status": e.status(), "message": e.message()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
