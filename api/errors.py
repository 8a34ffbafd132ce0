"""The service's error hierarchy, shared by the NATS endpoints and the REST app.

ServiceError                 code, message, field errors -> error reply / HTTP status
├── InvalidRequest           400: the request is malformed or breaks a rule; nothing written
├── NotFound                 404: no such execution, order or broker
└── Unavailable              503: the service is stopping or a dependency is down; retry
"""

from __future__ import annotations

from collections.abc import Sequence

from api.contracts import ErrorBody, FieldError


class ServiceError(Exception):
    code = 500

    def __init__(self, message: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = tuple(errors)

    def body(self) -> ErrorBody:
        return ErrorBody(message=self.message, errors=self.errors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code}, {self.message!r}, errors={len(self.errors)})"


class InvalidRequest(ServiceError):
    code = 400


class NotFound(ServiceError):
    code = 404


class Unavailable(ServiceError):
    code = 503
