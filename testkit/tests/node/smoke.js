// Node driver smoke test against the testkit server: the OP_QUERY handshake, CRUD, indexes,
// aggregation and a change stream. Usage: node smoke.js MONGODB_URI
'use strict';

const assert = require('assert');
const { MongoClient } = require('mongodb');

async function main(uri) {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 5000 });
  await client.connect();
  const db = client.db('nodesmoke');
  const coll = db.collection('items');
  await coll.drop().catch(() => {});

  const stream = coll.watch([], { fullDocument: 'updateLookup', maxAwaitTimeMS: 300 });
  await stream.tryNext(); // opens the cursor

  const inserted = await coll.insertMany([...Array(10).keys()].map((i) => ({ _id: i, x: i % 2 })));
  assert.strictEqual(inserted.insertedCount, 10);
  const odd = await coll.find({ x: 1 }).sort({ _id: -1 }).limit(2).project({ _id: 1 }).toArray();
  assert.deepStrictEqual(odd, [{ _id: 9 }, { _id: 7 }]);
  const updated = await coll.updateOne({ _id: 42 }, { $set: { x: 5 } }, { upsert: true });
  assert.strictEqual(updated.upsertedId, 42);
  await coll.createIndex({ x: 1 }, { unique: false, name: 'x_1' });
  const indexes = (await coll.indexes()).map((i) => i.name);
  assert.deepStrictEqual(indexes, ['_id_', 'x_1']);
  await assert.rejects(coll.insertOne({ _id: 1 }), (e) => e.code === 11000);
  assert.strictEqual(await coll.countDocuments({ x: 1 }), 5);
  const groups = await coll.aggregate([{ $group: { _id: '$x', n: { $sum: 1 } } }, { $sort: { _id: 1 } }]).toArray();
  assert.deepStrictEqual(groups, [{ _id: 0, n: 5 }, { _id: 1, n: 5 }, { _id: 5, n: 1 }]);

  const first = await stream.next();
  assert.strictEqual(first.operationType, 'insert');
  assert.deepStrictEqual(first.documentKey, { _id: 0 });
  await stream.close();
  await client.close();
  console.log('node smoke ok');
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
