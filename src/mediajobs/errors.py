"""Errors that reach the wire: one class per COS/CI error Code.

The docstring of each class is its default public Message; a raise site may
give a more precise one. Nothing here carries a traceback or an internal path:
what is logged server-side stays apart from what the client reads.
"""

from __future__ import annotations

from typing import ClassVar


class MediaJobsError(Exception):
    """An error occurred."""

    code: ClassVar[str] = "InternalError"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.headers = headers or {}
        super().__init__(self.message)


def _error(name: str, code: str, status: int, doc: str) -> type[MediaJobsError]:
    return type(name, (MediaJobsError,), {"code": code, "http_status": status, "__doc__": doc})


class InternalError(MediaJobsError):
    """We encountered an internal error. Please try again."""

    code, http_status = "InternalError", 500


# 400
InvalidArgument = _error("InvalidArgument", "InvalidArgument", 400, "Invalid argument.")
InvalidRequest = _error("InvalidRequest", "InvalidRequest", 400, "The request is not valid.")
MalformedXML = _error(
    "MalformedXML", "MalformedXML", 400, "The XML you provided was not well-formed or did not validate."
)
InvalidDigest = _error("InvalidDigest", "InvalidDigest", 400, "The Content-MD5 you specified is not valid.")
BadDigest = _error(
    "BadDigest", "BadDigest", 400, "The Content-MD5 you specified did not match what we received."
)
EntityTooLarge = _error(
    "EntityTooLarge", "EntityTooLarge", 400, "Your proposed upload exceeds the maximum allowed size."
)
EntityTooSmall = _error(
    "EntityTooSmall", "EntityTooSmall", 400, "Your proposed upload is smaller than the minimum allowed size."
)
IncompleteBody = _error(
    "IncompleteBody",
    "IncompleteBody",
    400,
    "You did not provide the number of bytes specified by Content-Length.",
)
InvalidBucketName = _error(
    "InvalidBucketName", "InvalidBucketName", 400, "The specified bucket is not valid."
)
InvalidObjectName = _error(
    "InvalidObjectName", "InvalidObjectName", 400, "The specified object name is not valid."
)
KeyTooLong = _error("KeyTooLong", "KeyTooLong", 400, "Your key is too long.")
InvalidURI = _error("InvalidURI", "InvalidURI", 400, "Couldn't parse the specified URI.")
InvalidPart = _error(
    "InvalidPart",
    "InvalidPart",
    400,
    "One or more of the specified parts could not be found or did not match.",
)
InvalidPartOrder = _error(
    "InvalidPartOrder", "InvalidPartOrder", 400, "The list of parts was not in ascending order."
)
MissingRequestBodyError = _error(
    "MissingRequestBodyError", "MissingRequestBodyError", 400, "Request body is empty."
)
XMLSizeLimit = _error("XMLSizeLimit", "XMLSizeLimit", 400, "The XML body is too large.")
InvalidPicOperations = _error(
    "InvalidPicOperations", "InvalidPicOperations", 400, "The Pic-Operations header is not valid."
)

# 403
AccessDenied = _error("AccessDenied", "AccessDenied", 403, "Access Denied.")
InvalidAccessKeyId = _error(
    "InvalidAccessKeyId",
    "InvalidAccessKeyId",
    403,
    "The SecretId you provided does not exist in our records.",
)
SignatureDoesNotMatch = _error(
    "SignatureDoesNotMatch",
    "SignatureDoesNotMatch",
    403,
    "The request signature we calculated does not match the signature you provided.",
)
RequestTimeTooSkewed = _error(
    "RequestTimeTooSkewed",
    "RequestTimeTooSkewed",
    403,
    "The difference between the request time and the server's time is too large.",
)

# 404
NoSuchBucket = _error("NoSuchBucket", "NoSuchBucket", 404, "The specified bucket does not exist.")
NoSuchKey = _error("NoSuchKey", "NoSuchKey", 404, "The specified key does not exist.")
NoSuchUpload = _error("NoSuchUpload", "NoSuchUpload", 404, "The specified multipart upload does not exist.")
NoSuchResource = _error("NoSuchResource", "NoSuchResource", 404, "The specified resource does not exist.")

# 405, 409, 411, 412, 416
MethodNotAllowed = _error(
    "MethodNotAllowed", "MethodNotAllowed", 405, "The specified method is not allowed against this resource."
)
BucketAlreadyOwnedByYou = _error(
    "BucketAlreadyOwnedByYou",
    "BucketAlreadyOwnedByYou",
    409,
    "The bucket you tried to create already exists.",
)
BucketNotEmpty = _error(
    "BucketNotEmpty", "BucketNotEmpty", 409, "The bucket you tried to delete is not empty."
)
MissingContentLength = _error(
    "MissingContentLength", "MissingContentLength", 411, "You must provide the Content-Length HTTP header."
)
PreconditionFailed = _error("PreconditionFailed", "PreconditionFailed", 412, "Precondition not match.")
InvalidRange = _error("InvalidRange", "InvalidRange", 416, "The requested range is not satisfiable.")

# 5xx
NotImplementedByServer = _error(
    "NotImplementedByServer",
    "NotImplemented",
    501,
    "A header or parameter you provided implies functionality that is not implemented.",
)
ServiceUnavailable = _error(
    "ServiceUnavailable", "ServiceUnavailable", 503, "Please reduce your request rate."
)
