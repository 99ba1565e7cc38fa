"""pymongo watch() smoke test: a cluster-wide change stream as migration tools open it.

Usage: python3 watch.py MONGODB_URI
"""

import sys

from pymongo import MongoClient


def main(uri: str) -> None:
    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    db = client.watched
    with client.watch(full_document="updateLookup", show_expanded_events=True, max_await_time_ms=500) as stream:
        db.create_collection("c")
        coll = db.c
        coll.create_index("x")
        coll.insert_one({"_id": 1, "x": 1})
        coll.update_one({"_id": 1}, {"$set": {"x": 2}, "$unset": {"nope": ""}})
        coll.replace_one({"_id": 1}, {"x": 3})
        coll.delete_one({"_id": 1})
        client.admin.command("renameCollection", "watched.c", to="watched.d")
        db.d.drop()

        events = []
        while len(events) < 8:
            change = stream.try_next()
            if change is not None:
                events.append(change)
        kinds = [e["operationType"] for e in events]
        assert kinds == [
            "create", "createIndexes", "insert", "update", "replace", "delete", "rename", "drop",
        ], kinds

        create, create_index, insert, update, replace, delete, rename, drop = events
        assert create["ns"] == {"db": "watched", "coll": "c"}, create
        assert create["operationDescription"]["idIndex"]["name"] == "_id_", create
        assert create_index["operationDescription"]["indexes"][0]["key"] == {"x": 1}, create_index
        assert insert["fullDocument"] == {"_id": 1, "x": 1}, insert
        assert insert["documentKey"] == {"_id": 1}, insert
        assert update["updateDescription"]["updatedFields"] == {"x": 2}, update
        assert update["updateDescription"]["removedFields"] == [], update
        # updateLookup happens when the event is read: by then the document is gone.
        assert update["fullDocument"] is None, update
        assert replace["fullDocument"] == {"_id": 1, "x": 3}, replace
        assert delete["documentKey"] == {"_id": 1}, delete
        assert rename["to"] == {"db": "watched", "coll": "d"}, rename
        assert drop["ns"] == {"db": "watched", "coll": "d"}, drop
        for e in events:
            assert "collectionUUID" in e, e
            assert e["clusterTime"] is not None and e["wallTime"] is not None, e
        times = [e["clusterTime"] for e in events]
        assert times == sorted(times) and len(set(times)) == len(times), times
        token = stream.resume_token
        assert token is not None and "_data" in token

    # Resuming from the stored token sees only later changes.
    with client.watch(resume_after=token, max_await_time_ms=500) as resumed:
        db.e.insert_one({"_id": 9})
        change = None
        while change is None:
            change = resumed.try_next()
        assert change["operationType"] == "insert" and change["documentKey"] == {"_id": 9}, change

    client.close()
    print("pymongo watch ok")


if __name__ == "__main__":
    main(sys.argv[1])
