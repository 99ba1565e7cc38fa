"""pymongo smoke test against the testkit server: what applications do.

Usage: python3 smoke.py MONGODB_URI
Exits non-zero (with a traceback) on the first mismatch.
"""

import sys

from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import DuplicateKeyError
from pymongo.write_concern import WriteConcern


def main(uri: str) -> None:
    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    assert client.admin.command("ping")["ok"] == 1.0
    db = client.smoke
    coll = db.items
    coll.drop()

    # insert_many (kind-1 document sequence)
    result = coll.insert_many([{"_id": i, "x": i % 3, "name": f"n{i:02d}"} for i in range(20)])
    assert result.inserted_ids == list(range(20)), result.inserted_ids

    # find with filter, sort, limit and projection
    docs = list(coll.find({"x": 1}, {"name": 1, "_id": 0}).sort("name", DESCENDING).limit(3))
    assert docs == [{"name": "n19"}, {"name": "n16"}, {"name": "n13"}], docs

    # update_one with upsert
    upserted = coll.update_one({"_id": 100}, {"$set": {"x": 9}}, upsert=True)
    assert upserted.upserted_id == 100 and upserted.matched_count == 0, upserted.raw_result
    updated = coll.update_one({"_id": 100}, {"$inc": {"x": 1}})
    assert updated.matched_count == 1 and updated.modified_count == 1
    assert coll.find_one({"_id": 100}) == {"_id": 100, "x": 10}

    # replace_one
    replaced = coll.replace_one({"_id": 1}, {"x": 42, "name": "one"})
    assert replaced.modified_count == 1
    assert coll.find_one({"_id": 1}) == {"_id": 1, "x": 42, "name": "one"}

    # delete_many
    deleted = coll.delete_many({"x": 0})
    assert deleted.deleted_count == 7, deleted.deleted_count

    # create_index(unique) and its duplicate-key error
    name = coll.create_index([("name", ASCENDING)], unique=True)
    assert name == "name_1"
    try:
        coll.insert_one({"_id": 200, "name": "n02"})
        raise AssertionError("duplicate key accepted")
    except DuplicateKeyError as e:
        assert e.code == 11000
        assert e.details["keyPattern"] == {"name": 1}, e.details
        assert e.details["keyValue"] == {"name": "n02"}, e.details
        assert "E11000 duplicate key error collection: smoke.items index: name_1" in str(e)

    # counts
    assert coll.count_documents({}) == 14, coll.count_documents({})
    assert coll.count_documents({"x": 1}) == 6
    assert coll.estimated_document_count() == 14

    # aggregate
    groups = list(
        coll.aggregate(
            [
                {"$match": {"x": {"$lt": 3}}},
                {"$group": {"_id": "$x", "n": {"$sum": 1}}},
                {"$sort": {"_id": 1}},
            ]
        )
    )
    assert groups == [{"_id": 1, "n": 6}, {"_id": 2, "n": 6}], groups

    # list_collections and list_indexes
    names = [c["name"] for c in db.list_collections()]
    assert names == ["items"], names
    info = next(db.list_collections(filter={"name": "items"}))
    assert info["type"] == "collection" and "uuid" in info["info"], info
    indexes = {i["name"]: i for i in coll.list_indexes()}
    assert set(indexes) == {"_id_", "name_1"}, indexes
    assert indexes["name_1"]["unique"] is True

    # unacknowledged write: OP_MSG with moreToCome, no reply
    coll.with_options(write_concern=WriteConcern(w=0)).insert_one({"_id": 300, "name": "w0"})
    assert coll.find_one({"_id": 300}) == {"_id": 300, "name": "w0"}

    client.close()
    print("pymongo smoke ok")


if __name__ == "__main__":
    main(sys.argv[1])
