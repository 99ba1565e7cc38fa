"""pymongo against a testkit server with users and TLS: SCRAM logins and mongod's error codes.

Usage: python3 auth.py MONGODB_URI CA_FILE
The URI has no credentials; the server has users admin/adminpw (root) and reader/readerpw
(read@app), and speaks TLS with a certificate signed by CA_FILE.
Exits non-zero (with a traceback) on the first mismatch.
"""

import sys

from pymongo import MongoClient
from pymongo.errors import OperationFailure


def client(uri: str, ca_file: str, **kwargs) -> MongoClient:
    return MongoClient(uri, tlsCAFile=ca_file, serverSelectionTimeoutMS=5000, **kwargs)


def main(uri: str, ca_file: str) -> None:
    # Every mechanism, and pymongo's own negotiation (saslSupportedMechs + speculative auth).
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-1", None):
        extra = {"authMechanism": mechanism} if mechanism else {}
        admin = client(uri, ca_file, username="admin", password="adminpw", **extra)
        status = admin.admin.command("connectionStatus", showPrivileges=True)["authInfo"]
        assert status["authenticatedUsers"] == [{"user": "admin", "db": "admin"}], status
        assert status["authenticatedUserRoles"] == [{"role": "root", "db": "admin"}], status
        assert status["authenticatedUserPrivileges"], status
        admin.app.items.insert_one({"mechanism": mechanism or "default"})
        admin.close()

    try:
        client(uri, ca_file, username="admin", password="wrong").admin.command("ping")
        raise AssertionError("a wrong password must fail")
    except OperationFailure as e:
        assert e.code == 18, e.details
        assert e.details["errmsg"] == "Authentication failed.", e.details

    anonymous = client(uri, ca_file)
    try:
        anonymous.app.items.find_one()
        raise AssertionError("an unauthenticated find must fail")
    except OperationFailure as e:
        assert e.code == 13, e.details
        assert e.details["errmsg"] == "Command find requires authentication", e.details

    reader = client(uri, ca_file, username="reader", password="readerpw")
    assert reader.app.items.count_documents({}) == 3
    try:
        reader.app.items.insert_one({"x": 1})
        raise AssertionError("a read-only insert must fail")
    except OperationFailure as e:
        assert e.code == 13, e.details
        assert e.details["errmsg"].startswith(
            'not authorized on app to execute command { insert: "items"'
        ), e.details
    assert reader.list_database_names() == ["app"], reader.list_database_names()
    print("pymongo auth: ok")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
