#!/usr/bin/env python3
"""Does `POST /v1/auth/password/forgot` take the same time for a known and an
unknown address? Starts the server binary on 127.0.0.1 with a fresh SQLite data
directory, registers one account, then times N requests for the known address
and N for unknown ones, interleaved, and prints each side's median and p90 and
their ratio. The test suite proves both paths run the same statements; this
measures what a timing attacker would see. Bounded: N requests each, nothing
leaves loopback.

    bench/timing/forgot.py target/release/portcullis 400
"""
import base64, json, os, socket, statistics, subprocess, sys, tempfile, time, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            res.read()
            status = res.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    return status, time.perf_counter() - start


def main():
    binary, n = sys.argv[1], min(int(sys.argv[2]) if len(sys.argv) > 2 else 400, 5000)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, PORTCULLIS_MASTER_KEY=base64.b64encode(b"k" * 32).decode(),
                   PORTCULLIS_LOG__LEVEL="error", PORTCULLIS_SECURITY__EMAIL_SEND_RATE="1000000/1h",
                   PORTCULLIS_SECURITY__REGISTER_RATE="1000/1h")
        server = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.05)
            status, _ = post(base, "/v1/auth/register", {"email": "known@example.com", "password": "plum orbit ferry candle"})
            assert status == 201, status
            known, unknown = [], []
            for i in range(n):
                for side, email in ((known, "known@example.com"), (unknown, f"nobody{i}@example.com")):
                    status, took = post(base, "/v1/auth/password/forgot", {"email": email})
                    assert status == 202, status
                    side.append(took * 1000)
            def show(name, xs):
                xs = sorted(xs)
                p90 = xs[int(len(xs) * 0.9)]
                print(f"{name:8} median {statistics.median(xs):7.3f} ms   p90 {p90:7.3f} ms   (n={len(xs)})")
                return statistics.median(xs)
            a, b = show("known", known), show("unknown", unknown)
            print(f"median ratio known/unknown: {a / b:.3f}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
