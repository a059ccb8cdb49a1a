#!/usr/bin/env node
// A Cortex-OS client in another language, from the .proto files alone: it stores a memory,
// searches for it, and lists the kernel's plugins, printing one JSON document.
//
//   npm ci && node client.js [HOST:PORT]      (default: $CORTEX_TARGET or 127.0.0.1:50051)
//
// Credentials, as any gRPC client sends them:
//   CORTEX_TOKEN=ctx_...        an API key (`cortex keys create NAME`), sent as
//                               `authorization: Bearer <key>`; without one the kernel sees
//                               `local` (loopback only)
//   CORTEX_TLS_CA=ca.pem        call over TLS, trusting this CA (`cortex tls init` makes it)
"use strict";

const path = require("node:path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");
const target = process.argv[2] || process.env.CORTEX_TARGET || "127.0.0.1:50051";

const definition = protoLoader.loadSync(
  ["cortex/memories/v1/memories.proto", "cortex/kernel/v1/kernel.proto"],
  { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true }
);
const cortex = grpc.loadPackageDefinition(definition).cortex;

const fs = require("node:fs");

const channel = process.env.CORTEX_TLS_CA
  ? grpc.credentials.createSsl(fs.readFileSync(process.env.CORTEX_TLS_CA))
  : grpc.credentials.createInsecure();
const memories = new cortex.memories.v1.MemoryService(target, channel);
const kernel = new cortex.kernel.v1.KernelService(target, channel);

function call(client, method, request) {
  const metadata = new grpc.Metadata();
  if (process.env.CORTEX_TOKEN) {
    metadata.set("authorization", `Bearer ${process.env.CORTEX_TOKEN}`);
  }
  const deadline = new Date(Date.now() + 60_000);
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

async function main() {
  const text = process.env.CORTEX_NODE_TEXT || "Node.js can talk to Cortex-OS with nothing but the protos";
  const stored = await call(memories, "Store", { text, kind: "note", tags: ["node"], source: "examples/node-client" });
  const found = await call(memories, "Search", { query: text, top_k: 3, mode: "SEARCH_MODE_HYBRID" });
  const plugins = await call(kernel, "ListPlugins", {});
  let invalid = null;
  try {
    await call(memories, "Store", { text: "" });
  } catch (error) {
    invalid = { code: grpc.status[error.code], details: error.details };
  }
  const result = {
    stored: { id: stored.id, created: stored.created },
    search: found.results.map((r) => ({ id: r.memory.id, text: r.memory.text, score: r.score })),
    plugins: plugins.plugins.map((p) => ({ name: p.name, state: p.state })),
    invalid_store: invalid,
  };
  console.log(JSON.stringify(result, null, 2));
  if (!found.results.some((r) => r.memory.id === stored.id)) {
    throw new Error("the stored memory was not found by search");
  }
}

main()
  .then(() => process.exit(0))
  .catch((error) => {
    console.error(`cortex node client: ${error.code !== undefined ? grpc.status[error.code] + ": " : ""}${error.details || error.message}`);
    process.exit(1);
  });
