#!/usr/bin/env python3
"""herbarium-serve and ONNX Runtime on the CPU, from one run of this script.

1. `predict_images` on the same images with the same model, run by PyTorch and by onnxruntime (`model.onnx` from
   `export_onnx_model`, checked against PyTorch when written): images/s of each, their ratio (goal: onnxruntime
   >= 1.5x), and whether the top-1 species agree.
2. `herbarium-serve RUN` in a subprocess on loopback: 1, 4 and 16 clients, each posting one sheet per request to
   `POST /identify` as soon as its previous answer is in, for `--seconds` (or `--requests`) per level: p50/p95 latency,
   throughput (images/s), and the mean batch the server made (from /health). Throughput at 16 clients over 1 client
   (goal >= 1.5x: concurrent requests share forward passes). With `--onnx-server`, the server runs onnxruntime too.

The model: `--arch` (default tf_efficientnet_lite0) at `--size` px with `--species` classes, random weights (speed does
not depend on them), as a run folder of the safe format. The images: drawn synthetic sheets (`make_synthetic_dataset`),
`--sheet-size` px on the long side. The clients run in this process (threads), on the same cores as the server:
on a 2-core machine they take part of the CPU the server would have.

    python bench/serve.py                                   # lite0 at 224 px, 48 sheets, 20 s a level
    python bench/serve.py --seconds 5 --images 16           # a quick try
"""
import argparse, contextlib, io, json, os, socket, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

def make_run(folder, arch, size, species):
    "A run folder with a random-weight model in the safe format, and its model.onnx"
    from herbarium_fastai.model_file import ModelDescription
    from herbarium_fastai.inference import learner_from_description, save_safe_model
    from herbarium_fastai.onnx_model import export_onnx_model
    description = ModelDescription(arch=arch, size=size, class_counts=[3] * species,
                                   classes=[dict(category_id=c, species=f'Species {c}', genus=None, family=f'Family {c % 3}',
                                                 order='Order') for c in range(species)])
    save_safe_model(learner_from_description(description), folder)
    export_onnx_model(folder)
    return folder

def make_sheets(folder, n, size):
    "`n` drawn synthetic sheets (JPEG), `size` px on the long side"
    from herbarium_fastai.synth import make_synthetic_dataset
    make_synthetic_dataset(folder, species=max(1, n // 4), size=size, seed=0, test_per_species=4, min_per_species=2, max_per_species=2, workers=0)
    return sorted((folder/'test'/'images').rglob('*.jpg'))[:n]

def predict_speed(learn, files, bs, repeats=2):
    "Images/s of `predict_images` (the best of `repeats` passes, after a warm-up) and the top-1 ids"
    from herbarium_fastai.inference import predict_images
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # fastprogress's bars
        predict_images(learn, files[:bs], k=5, bs=bs, num_workers=0)  # warm-up: first-call allocations, onnxruntime's graph setup
        best, top1 = 0., None
        for _ in range(repeats):
            start = time.perf_counter()
            table = predict_images(learn, files, k=5, bs=bs, num_workers=0)
            best = max(best, len(files) / (time.perf_counter() - start))
            top1 = table[table['position'] == 1].category_id.tolist()
    return best, top1

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def start_server(run, onnx):
    "herbarium-serve RUN on a free loopback port, once /health answers: (url, process)"
    import httpx
    port = free_port()
    command = [str(Path(sys.executable).parent/'herbarium-serve'), str(run), '--port', str(port), *(['--onnx'] if onnx else [])]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = f'http://127.0.0.1:{port}', time.time() + 180
    while True:
        try:
            if httpx.get(url + '/health', timeout=2).status_code == 200: return url, process
        except httpx.TransportError: pass
        if process.poll() is not None or time.time() > deadline:
            process.kill(); sys.exit(f'the server did not start: {process.communicate()[1][-2000:]}')
        time.sleep(0.3)

def load_level(url, files, clients, seconds, max_requests):
    "`clients` threads posting one sheet a request until `seconds` pass or `max_requests` are done: latencies (s), wall time, errors"
    import httpx
    payloads = [(f.name, f.read_bytes()) for f in files]
    latencies, errors, lock = [], [], threading.Lock()
    count = iter(range(max_requests))
    start = time.perf_counter()
    def client(number):
        with httpx.Client(base_url=url, timeout=300) as http:
            for n in count:
                if time.perf_counter() - start > seconds: break
                name, data = payloads[n % len(payloads)]
                sent = time.perf_counter()
                response = http.post('/identify', files=[('images', (name, data, 'image/jpeg'))])
                with lock:
                    if response.status_code == 200: latencies.append(time.perf_counter() - sent)
                    else: errors.append(response.text[:200])
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    return latencies, time.perf_counter() - start, errors

def serve_levels(run, files, onnx, levels, seconds, max_requests):
    "Rows of the load test, one per concurrency level"
    import httpx
    url, process = start_server(run, onnx)
    rows = []
    try:
        load_level(url, files, 1, 2, 4)  # warm-up
        for clients in levels:
            before = httpx.get(url + '/health').json()
            latencies, wall, errors = load_level(url, files, clients, seconds, max_requests)
            after = httpx.get(url + '/health').json()
            images, batches = after['images'] - before['images'], after['batches'] - before['batches']
            quantiles = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
            rows.append(dict(clients=clients, requests=len(latencies), errors=len(errors), p50_ms=1000 * statistics.median(latencies),
                             p95_ms=1000 * quantiles[18], images_per_s=len(latencies) / wall, mean_batch=images / max(batches, 1)))
    finally:
        process.terminate(); process.wait(30)
    return rows

def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='tf_efficientnet_lite0')
    parser.add_argument('--size', type=int, default=224, help='image size fed to the model, px')
    parser.add_argument('--species', type=int, default=100)
    parser.add_argument('--images', type=int, default=48, help='sheets to predict and to post')
    parser.add_argument('--sheet-size', type=int, default=768, help='long side of the sheets, px')
    parser.add_argument('--bs', type=int, default=16, help='batch size of predict_images')
    parser.add_argument('--levels', default='1,4,16', help='concurrent clients, comma-separated')
    parser.add_argument('--seconds', type=float, default=20, help='time per level')
    parser.add_argument('--requests', type=int, default=400, help='requests per level at most')
    parser.add_argument('--onnx-server', action='store_true', help='the server runs onnxruntime (default: PyTorch)')
    args = parser.parse_args()
    import torch
    from herbarium_fastai.inference import load_safe_model
    from herbarium_fastai.onnx_model import load_onnx_model
    levels = [int(n) for n in args.levels.split(',')]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run, files = make_run(tmp/'run', args.arch, args.size, args.species), make_sheets(tmp/'sheets', args.images, args.sheet_size)
        print(f"machine: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); load average before: "
              + ' '.join(f'{x:.2f}' for x in os.getloadavg()))
        print(f"model: {args.arch} at {args.size} px, {args.species} classes (random weights); {len(files)} drawn sheets, "
              f"{args.sheet_size} px long side\n")
        torch_speed, torch_top1 = predict_speed(load_safe_model(run, cpu=True), files, args.bs)
        onnx_speed, onnx_top1 = predict_speed(load_onnx_model(run), files, args.bs)
        agree = sum(a == b for a, b in zip(torch_top1, onnx_top1))
        print(f"predict_images, {len(files)} sheets, bs {args.bs} (decoding and transforms included, the same for both):")
        print(f"  {'PyTorch':<12} {torch_speed:7.1f} images/s")
        print(f"  {'onnxruntime':<12} {onnx_speed:7.1f} images/s   onnxruntime / PyTorch = {onnx_speed / torch_speed:.2f}x "
              f"(goal >= 1.5x: {'met' if onnx_speed >= 1.5 * torch_speed else 'not met'}); top-1 agree on {agree}/{len(files)}\n")
        runtime = 'onnxruntime' if args.onnx_server else 'PyTorch'
        rows = serve_levels(run, files, args.onnx_server, levels, args.seconds, args.requests)
        print(f"POST /identify on loopback, one sheet a request, herbarium-serve with {runtime}, {args.seconds:g} s or {args.requests} requests a level:")
        print(f"  {'clients':>7} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} {'images/s':>9} {'mean batch':>10}")
        for r in rows:
            print(f"  {r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['images_per_s']:>9.2f} {r['mean_batch']:>10.2f}")
        if len(rows) > 1:
            ratio = rows[-1]['images_per_s'] / rows[0]['images_per_s']
            print(f"  throughput at {rows[-1]['clients']} clients / at {rows[0]['clients']}: {ratio:.2f}x "
                  f"(goal >= 1.5x: {'met' if ratio >= 1.5 else 'not met'})")
        print("load average after: " + ' '.join(f'{x:.2f}' for x in os.getloadavg()))

if __name__ == '__main__':
    main()
