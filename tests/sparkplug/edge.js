// A Sparkplug B edge node for tank's tests, made of the Eclipse Tahu JavaScript client
// (sparkplug-client, sparkplug-payload from npm: tests/sparkplug/package.json), so that tank is
// tested against an implementation nobody here wrote.
//
//   node edge.js <broker url> <group> <edge node> <host id> <scenario>
//
// It connects, waits for the host's STATE {"online": true} (retained, spBv1.0/STATE/<host id>) as
// a Sparkplug 3.0 edge node does, then plays the scenario and prints what it did, a line each
// ("births", "data", "rebirth answered", "done"), so the test can wait for those lines.
//
// Scenarios:
//   types    NBIRTH and DBIRTH (device "d1") with a metric of every type the Tahu encoder has, then
//            NDATA and DDATA naming every metric by alias only, then DDEATH, then NDEATH (stop)
//   births   NBIRTH and DBIRTH, then leaves with a DISCONNECT (no death: the node stays alive)
//   data     (after `births`, from a new process) NDATA and DDATA by alias only, seq going on
//            from where `births` left it
//   gap      NBIRTH, NDATA seq 1, then NDATA with seq 9 (a gap); answers the host's rebirth
//            request (NCMD "Node Control/Rebirth") with a new NBIRTH, then NDATA
"use strict";

const sparkplug = require("sparkplug-client");
const mqtt = require("mqtt");

const [url, group, edgeNode, hostId, scenario] = process.argv.slice(2);

function say(line) {
  process.stdout.write(line + "\n");
}

// One metric of each type sparkplug-payload 1.0.3 encodes (it has no array types), with known
// values; aliases 1.. in this order. The test reads the same list (scenario_metrics below is
// printed as the "metrics" line).
const metrics = [
  { name: "int8", type: "Int8", value: -100 },
  { name: "int16", type: "Int16", value: -30000 },
  { name: "int32", type: "Int32", value: -2000000000 },
  { name: "int64", type: "Int64", value: -9000000000 },
  { name: "uint8", type: "UInt8", value: 250 },
  { name: "uint16", type: "UInt16", value: 65000 },
  { name: "uint32", type: "UInt32", value: 4000000000 },
  { name: "uint64", type: "UInt64", value: 9000000000000 },
  { name: "float", type: "Float", value: 1.5 },
  { name: "double", type: "Double", value: -2.25 },
  { name: "boolean", type: "Boolean", value: true },
  { name: "string", type: "String", value: "grüße" },
  { name: "datetime", type: "DateTime", value: 1700000000123 },
  { name: "text", type: "Text", value: "a longer text" },
  { name: "uuid", type: "UUID", value: "123e4567-e89b-12d3-a456-426614174000" },
  { name: "bytes", type: "Bytes", value: Buffer.from([0, 1, 2, 253, 254, 255]) },
  {
    name: "dataset",
    type: "DataSet",
    value: { numOfColumns: 2, columns: ["a", "b"], types: ["Int32", "String"], rows: [[1, "x"], [2, "y"]] },
  },
  {
    name: "template",
    type: "Template",
    value: {
      version: "v1",
      templateRef: "Motor",
      isDefinition: false,
      metrics: [{ name: "rpm", type: "Int32", value: 1500 }],
      parameters: [{ name: "site", type: "String", value: "north" }],
    },
  },
  { name: "nothing", type: "Int32", value: null },
  {
    name: "with_properties",
    type: "Double",
    value: 20.5,
    properties: { engUnit: { type: "String", value: "°C" } },
  },
  { name: "historical", type: "Int32", value: 7, isHistorical: true, timestamp: 1600000000000 },
];

function withAliases(list, from) {
  return list.map((m, i) => Object.assign({}, m, { alias: from + i }));
}

function byAlias(list, from) {
  return list.map((m, i) => {
    const copy = Object.assign({}, m, { alias: from + i });
    delete copy.name;
    return copy;
  });
}

const deviceMetrics = [
  { name: "temp", type: "Float", value: 21.5 },
  { name: "count", type: "UInt32", value: 42 },
];

const client = sparkplug.newClient({
  serverUrl: url,
  username: "",
  password: "",
  groupId: group,
  edgeNode: edgeNode,
  clientId: `edge-${group}-${edgeNode}-${process.pid}`,
  version: "spBv1.0",
  publishDeath: scenario === "types",
  keepalive: 5,
});
client.on("error", (e) => {
  say("error " + e);
  process.exit(1);
});

// The host's STATE, from a plain MQTT client (the Tahu client subscribes to commands only).
function waitForHost() {
  return new Promise((resolve) => {
    const watcher = mqtt.connect(url, { clientId: `watch-${edgeNode}-${process.pid}`, clean: true });
    watcher.on("connect", () => watcher.subscribe(`spBv1.0/STATE/${hostId}`, { qos: 1 }));
    watcher.on("message", (topic, payload) => {
      let state;
      try {
        state = JSON.parse(payload.toString());
      } catch (e) {
        return;
      }
      if (state.online === true) {
        watcher.end(true);
        resolve();
      }
    });
  });
}

function nodeBirth() {
  client.publishNodeBirth({ timestamp: Date.now(), metrics: withAliases(metrics, 1) });
}
function deviceBirth() {
  client.publishDeviceBirth("d1", { timestamp: Date.now(), metrics: withAliases(deviceMetrics, 100) });
}
function data() {
  client.publishNodeData({ timestamp: Date.now(), metrics: byAlias(metrics, 1) });
  client.publishDeviceData("d1", { timestamp: Date.now(), metrics: byAlias(deviceMetrics, 100) });
}

// Lets the client's queued publications leave before the next step.
function flush() {
  return new Promise((resolve) => setTimeout(resolve, 200));
}

async function run() {
  await new Promise((resolve) => client.on("birth", resolve));
  await waitForHost();
  switch (scenario) {
    case "types":
      nodeBirth();
      deviceBirth();
      say("births");
      data();
      say("data");
      client.publishDeviceDeath("d1", { timestamp: Date.now() });
      await flush();
      client.stop();
      say("done");
      break;
    case "births":
      nodeBirth();
      deviceBirth();
      await flush();
      client.client.end(false, {}, () => {
        say(`births seq ${client.seq}`);
        process.exit(0);
      });
      return;
    case "data":
      client.seq = Number(process.env.EDGE_SEQ || "2");
      data();
      await flush();
      say("data");
      client.client.end(false, {}, () => process.exit(0));
      return;
    case "gap": {
      const rebirth = new Promise((resolve) =>
        client.on("ncmd", (payload) => {
          for (const m of payload.metrics || []) {
            if (m.name === "Node Control/Rebirth" && m.value === true) resolve();
          }
        }),
      );
      nodeBirth();
      client.publishNodeData({ timestamp: Date.now(), metrics: byAlias(metrics.slice(0, 1), 1) });
      client.seq = 9;
      client.publishNodeData({ timestamp: Date.now(), metrics: byAlias(metrics.slice(0, 1), 1) });
      say("gap");
      await rebirth;
      nodeBirth();
      client.publishNodeData({ timestamp: Date.now(), metrics: byAlias(metrics.slice(0, 1), 1) });
      say("rebirth answered");
      await flush();
      client.client.end(false, {}, () => process.exit(0));
      return;
    }
    default:
      say("unknown scenario " + scenario);
      process.exit(2);
  }
  setTimeout(() => process.exit(0), 500);
}

run();
