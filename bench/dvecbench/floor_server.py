"""The HTTP floor: a bare aiohttp + uvloop handler that calls hnswlib inline.

It speaks just enough of d-vecDB's search API (same path, bodies and answer shape) for the
same wrk run, and does nothing else: no validation, WAL, locks, metrics or thread hand-off.
What d-vecDB costs beyond this server is the node's own overhead; what this costs beyond
in-process hnswlib is the price of Python HTTP itself.

Run: `python floor_server.py PORT BASE.npy METRIC M EF_CONSTRUCTION EF` (loopback only).
"""

from __future__ import annotations

import sys

import hnswlib
import numpy as np
import orjson
from aiohttp import web


def build(path: str, metric: str, m: int, ef_construction: int, ef: int) -> hnswlib.Index:
    base = np.load(path)
    index = hnswlib.Index(space=metric, dim=base.shape[1])
    index.init_index(max_elements=len(base), M=m, ef_construction=ef_construction)
    index.add_items(base, np.arange(len(base)))
    index.set_ef(ef)
    return index


def app_for(index: hnswlib.Index) -> web.Application:
    async def search(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        rows = [body["vector"]] if "vector" in body else body["vectors"]
        queries = np.asarray(rows, dtype=np.float32)
        labels, distances = index.knn_query(queries, k=int(body.get("k", 10)), num_threads=1)
        results = [
            [{"id": str(label), "distance": dist} for label, dist in zip(lr, dr, strict=True)]
            for lr, dr in zip(labels.tolist(), distances.tolist(), strict=True)
        ]
        return web.Response(
            body=orjson.dumps({"results": results, "seq": 0}), content_type="application/json"
        )

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/collections/{name}/search", search)
    app.router.add_get("/readyz", ready)
    return app


def main(argv: list[str]) -> None:
    port, path, metric = int(argv[0]), argv[1], argv[2]
    m, ef_construction, ef = (int(x) for x in argv[3:6])
    index = build(path, metric, m, ef_construction, ef)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app_for(index), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(sys.argv[1:])
