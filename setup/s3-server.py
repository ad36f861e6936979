"""moto's S3 server for setup/s3-server.sh, as pgBackRest needs it: werkzeug closes the
connection after each answer without TLS's close_notify, which OpenSSL 3 (pgBackRest's)
takes for an error; so every answer says its length and the TLS session is shut down
properly before the socket closes."""

import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


def with_length(app):
    def wrapped(environ, start_response):
        answer = {}

        def start(status, headers, exc_info=None):
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        body = b"".join(app(environ, start))
        headers = [(k, v) for k, v in answer["headers"] if k.lower() != "content-length"]
        if environ["REQUEST_METHOD"] == "HEAD":
            length = dict((k.lower(), v) for k, v in answer["headers"]).get("content-length", "0")
        else:
            length = str(len(body))
        start_response(answer["status"], headers + [("Content-Length", length)])
        return [body]

    return wrapped


class Handler(MotoRequestHandler):
    def finish(self):
        super().finish()
        try:
            # close_notify; bounded, for a client that never answers it.
            self.connection.settimeout(5)
            self.connection.unwrap()
        except (OSError, ValueError):
            pass


def main():
    host, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    run_simple(
        host,
        port,
        with_length(DomainDispatcherApplication(create_backend_app)),
        threaded=True,
        ssl_context=(cert, key),
        request_handler=Handler,
    )


if __name__ == "__main__":
    main()
