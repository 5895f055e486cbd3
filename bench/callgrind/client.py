"""Drives a server for bench/callgrind/run.sh: signs up, signs in, then sends N
requests of one kind over one keep-alive connection."""
import http.client, json, sys, time
port, n, what = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for _ in range(600):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120); c.request("GET", "/readyz"); r = c.getresponse(); r.read()
        if r.status == 200: break
    except Exception: time.sleep(0.5)
def post(path, body, headers=None):
    c.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json", **(headers or {})}); r = c.getresponse(); return r.status, r.read()
post("/v1/auth/register", {"email": "cg@example.com", "password": "correct horse battery staple"})
st, b = post("/v1/auth/login", {"email": "cg@example.com", "password": "correct horse battery staple"})
tok = json.loads(b)["access_token"]
if what == "me":
    for _ in range(n):
        c.request("GET", "/v1/me", headers={"authorization": "Bearer " + tok}); r = c.getresponse(); r.read(); assert r.status == 200, r.status
elif what == "cc":
    import base64
    cid, sec = sys.argv[4], sys.argv[5]
    auth = "Basic " + base64.b64encode(f"{cid}:{sec}".encode()).decode()
    for _ in range(n):
        c.request("POST", "/oauth/token", body="grant_type=client_credentials", headers={"authorization": auth, "content-type": "application/x-www-form-urlencoded"}); r = c.getresponse(); r.read(); assert r.status == 200, r.status
print("done", n, what)
