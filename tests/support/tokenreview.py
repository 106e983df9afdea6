"""A stand-in for the Kubernetes TokenReview API (the only fake of the Vault tests: there is no
cluster here). It answers ``POST /apis/authentication.k8s.io/v1/tokenreviews`` as the
TokenReview documentation shows: a token it issued is authenticated as its service account,
any other is not."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ensemble_tap.bus.embedded import free_port

PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class TokenReviewAPI:
    def __init__(self) -> None:
        self.port = free_port()
        self.issued: dict[str, tuple[str, str]] = {}  # token → (namespace, service account)
        self.reviews: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.reviews.append(review)
                # Clients may leave apiVersion/kind out; the API server defaults them.
                if self.path != PATH or not isinstance(review.get("spec", {}).get("token"), str):
                    self.send_error(404 if self.path != PATH else 400)
                    return
                found = api.issued.get(review["spec"]["token"])
                status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
                if found is not None:
                    namespace, account = found
                    status = {
                        "authenticated": True,
                        "user": {
                            "username": f"system:serviceaccount:{namespace}:{account}",
                            "uid": f"uid-{account}",
                            "groups": [
                                "system:serviceaccounts",
                                f"system:serviceaccounts:{namespace}",
                            ],
                        },
                    }
                body = json.dumps(
                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                     "status": status}
                ).encode()  # fmt: skip
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TokenReviewAPI:
        self.thread.start()
        return self

    def issue(self, namespace: str, account: str) -> str:
        """A service-account token (a JWT whose claims name the account) this API vouches for."""
        claims = {
            "iss": "kubernetes/serviceaccount",
            "sub": f"system:serviceaccount:{namespace}:{account}",
            "kubernetes.io/serviceaccount/namespace": namespace,
            "kubernetes.io/serviceaccount/service-account.name": account,
            "kubernetes.io/serviceaccount/service-account.uid": f"uid-{account}",
        }
        token = f"{_segment({'alg': 'RS256', 'typ': 'JWT'})}.{_segment(claims)}.stand-in"
        self.issued[token] = (namespace, account)
        return token

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
