// Sparkplug B payloads made by an encoder nobody here wrote: Eclipse Tahu's JavaScript
// `sparkplug-payload` (npm, the version in package-lock.json), for tank's decoder test
// (tests/unit/sparkplug_payload_test.cpp, "payloads of the Eclipse Tahu JavaScript encoder").
//
// Prints one JSON object a line: {"name", "payload_hex": the bytes in hex, "expected": what
// tank::sparkplug::decode() must read from them}. The expected values are written here by hand from
// the Sparkplug 3.0 specification, never computed by tank. 64-bit integers are BigInts, written as
// JSON numbers with all their digits.
//
// Tahu JS 1.0.3 has no array types (its encodeType() maps "Int8Array" to 0, and setValue() sets no
// value for it). The array cases pack their bytes here, as section 6.4.17 says and as Tahu's Java
// encoder does (little-endian; BooleanArray a 4-byte count, then bits from the most significant;
// StringArray NUL-terminated), hand them to Tahu as Bytes, and then set the datatype to the array
// type in Tahu's own protobuf messages (lib/sparkplugPayloadProto.js) before encoding again.
//
// Usage: node encode.js [--seeds DIR]   (--seeds: also write each payload to DIR/tahu-<name>, the
// fuzz corpus seeds of fuzz/corpus/sparkplug)
'use strict';

const fs = require('fs');
const path = require('path');
const Long = require('long');
const sparkplug = require('sparkplug-payload').get('spBv1.0');
const proto = require('sparkplug-payload/lib/sparkplugPayloadProto').org.eclipse.tahu.protobuf;

const cases = [];
// A payload of `metrics` (Tahu's user form); `expected`: tank's reading of them.
function add(name, payload, expected, patch) {
  cases.push({ name, payload, expected, patch });
}
const T = 1700000000000;  // a timestamp, ms
const f32 = Math.fround;
const big = (s) => BigInt(s);

// The flags tank always writes in a metric's JSON.
function m(fields) {
  return Object.assign({ is_null: false, is_historical: false, is_transient: false }, fields);
}

// --- scalars ------------------------------------------------------------------------------------
add('integers', {
  timestamp: T, seq: 0,
  metrics: [
    { name: 'i8', type: 'Int8', value: -128 },
    { name: 'i8b', type: 'Int8', value: -5 },
    { name: 'i8c', type: 'Int8', value: 127 },
    { name: 'i16', type: 'Int16', value: -32768 },
    { name: 'i16b', type: 'Int16', value: 32767 },
    { name: 'i32', type: 'Int32', value: -2147483648 },
    { name: 'i32b', type: 'Int32', value: 2147483647 },
    { name: 'i64', type: 'Int64', value: Long.fromString('-9223372036854775808') },
    { name: 'i64b', type: 'Int64', value: Long.fromString('9223372036854775807') },
    { name: 'i64c', type: 'Int64', value: -1 },
    { name: 'u8', type: 'UInt8', value: 255 },
    { name: 'u16', type: 'UInt16', value: 65535 },
    // Tahu JS puts UInt32 in long_value (the specification: int_value).
    { name: 'u32', type: 'UInt32', value: 4294967295 },
    { name: 'u32b', type: 'UInt32', value: 0 },
    { name: 'u64', type: 'UInt64', value: Long.fromString('18446744073709551615', true) },
    { name: 'dt', type: 'DateTime', value: T + 1 },
  ],
}, {
  timestamp: T, seq: 0,
  metrics: [
    m({ name: 'i8', datatype: 'Int8', value: -128 }),
    m({ name: 'i8b', datatype: 'Int8', value: -5 }),
    m({ name: 'i8c', datatype: 'Int8', value: 127 }),
    m({ name: 'i16', datatype: 'Int16', value: -32768 }),
    m({ name: 'i16b', datatype: 'Int16', value: 32767 }),
    m({ name: 'i32', datatype: 'Int32', value: -2147483648 }),
    m({ name: 'i32b', datatype: 'Int32', value: 2147483647 }),
    m({ name: 'i64', datatype: 'Int64', value: big('-9223372036854775808') }),
    m({ name: 'i64b', datatype: 'Int64', value: big('9223372036854775807') }),
    m({ name: 'i64c', datatype: 'Int64', value: -1 }),
    m({ name: 'u8', datatype: 'UInt8', value: 255 }),
    m({ name: 'u16', datatype: 'UInt16', value: 65535 }),
    m({ name: 'u32', datatype: 'UInt32', value: 4294967295 }),
    m({ name: 'u32b', datatype: 'UInt32', value: 0 }),
    m({ name: 'u64', datatype: 'UInt64', value: big('18446744073709551615') }),
    m({ name: 'dt', datatype: 'DateTime', value: T + 1 }),
  ],
});

add('floats-bools-strings', {
  timestamp: T, seq: 1,
  metrics: [
    { name: 'f', type: 'Float', value: 0.1 },
    { name: 'f-nan', type: 'Float', value: NaN },
    { name: 'f-inf', type: 'Float', value: Infinity },
    { name: 'f-ninf', type: 'Float', value: -Infinity },
    { name: 'f-max', type: 'Float', value: 3.4028234663852886e38 },
    { name: 'd', type: 'Double', value: 0.1 },
    { name: 'd-nan', type: 'Double', value: NaN },
    { name: 'd-ninf', type: 'Double', value: -Infinity },
    { name: 'd-min', type: 'Double', value: 5e-324 },
    { name: 'b', type: 'Boolean', value: true },
    { name: 'b2', type: 'Boolean', value: false },
    { name: 's', type: 'String', value: 'Grüße, 温度 🌡' },
    { name: 's-empty', type: 'String', value: '' },
    { name: 't', type: 'Text', value: 'line 1\nline "2"' },
    { name: 'u', type: 'UUID', value: '123e4567-e89b-12d3-a456-426614174000' },
    { name: 'by', type: 'Bytes', value: Buffer.from([0, 1, 2, 0xfe, 0xff]) },
    { name: 'by-empty', type: 'Bytes', value: Buffer.alloc(0) },
    { name: 'file', type: 'File', value: Buffer.from('hello\n') },
  ],
}, {
  timestamp: T, seq: 1,
  metrics: [
    m({ name: 'f', datatype: 'Float', value: f32(0.1) }),
    m({ name: 'f-nan', datatype: 'Float', value: 'NaN' }),
    m({ name: 'f-inf', datatype: 'Float', value: 'Infinity' }),
    m({ name: 'f-ninf', datatype: 'Float', value: '-Infinity' }),
    m({ name: 'f-max', datatype: 'Float', value: 3.4028234663852886e38 }),
    m({ name: 'd', datatype: 'Double', value: 0.1 }),
    m({ name: 'd-nan', datatype: 'Double', value: 'NaN' }),
    m({ name: 'd-ninf', datatype: 'Double', value: '-Infinity' }),
    m({ name: 'd-min', datatype: 'Double', value: 5e-324 }),
    m({ name: 'b', datatype: 'Boolean', value: true }),
    m({ name: 'b2', datatype: 'Boolean', value: false }),
    m({ name: 's', datatype: 'String', value: 'Grüße, 温度 🌡' }),
    m({ name: 's-empty', datatype: 'String', value: '' }),
    m({ name: 't', datatype: 'Text', value: 'line 1\nline "2"' }),
    m({ name: 'u', datatype: 'UUID', value: '123e4567-e89b-12d3-a456-426614174000' }),
    m({ name: 'by', datatype: 'Bytes', value: 'AAEC/v8=' }),
    m({ name: 'by-empty', datatype: 'Bytes', value: '' }),
    m({ name: 'file', datatype: 'File', value: 'aGVsbG8K' }),
  ],
});

// --- flags, aliases, nulls, properties ----------------------------------------------------------
add('flags-aliases-nulls', {
  timestamp: T, seq: 255, uuid: 'my-schema',
  metrics: [
    { name: 'temp', alias: 1, timestamp: T - 1000, type: 'Double', value: 21.5, isHistorical: true },
    { alias: big('18446744073709551615'), type: 'Int32', value: 7, isTransient: true },
    { name: 'gone', alias: 2, type: 'Int32', value: null },
    { name: 'gone-s', type: 'String', value: null },
    { name: 'both', type: 'Boolean', value: false, isHistorical: true, isTransient: true },
  ].map((x) => (typeof x.alias === 'bigint' ? Object.assign(x, { alias: Long.fromString(x.alias.toString(), true) }) : x)),
}, {
  timestamp: T, seq: 255, uuid: 'my-schema',
  metrics: [
    m({ name: 'temp', alias: 1, timestamp: T - 1000, datatype: 'Double', value: 21.5, is_historical: true }),
    m({ alias: big('18446744073709551615'), datatype: 'Int32', value: 7, is_transient: true }),
    m({ name: 'gone', alias: 2, datatype: 'Int32', value: null, is_null: true }),
    m({ name: 'gone-s', datatype: 'String', value: null, is_null: true }),
    m({ name: 'both', datatype: 'Boolean', value: false, is_historical: true, is_transient: true }),
  ],
});

add('properties', {
  timestamp: T, seq: 2,
  metrics: [{
    name: 'pressure', type: 'Float', value: 1.5,
    properties: {
      engUnit: { type: 'String', value: 'bar' },
      engHigh: { type: 'Double', value: 10.25 },
      scale: { type: 'Int32', value: -3 },
      count: { type: 'UInt32', value: 4000000000 },
      big: { type: 'Int64', value: Long.fromString('-9000000000000000000') },
      readOnly: { type: 'Boolean', value: true },
      missing: { type: 'String', value: null },
      when: { type: 'DateTime', value: T },
      nested: { type: 'PropertySet', value: { inner: { type: 'UInt8', value: 200 }, deeper: { type: 'PropertySet', value: { x: { type: 'Float', value: 0.5 } } } } },
      list: { type: 'PropertySetList', value: [{ a: { type: 'Int16', value: -2 } }, {}, { b: { type: 'Text', value: 'two' } }] },
    },
  }],
}, {
  timestamp: T, seq: 2,
  metrics: [m({
    name: 'pressure', datatype: 'Float', value: 1.5,
    properties: {
      engUnit: 'bar', engHigh: 10.25, scale: -3, count: 4000000000, big: big('-9000000000000000000'),
      readOnly: true, missing: null, when: T,
      nested: { inner: 200, deeper: { x: 0.5 } },
      list: [{ a: -2 }, {}, { b: 'two' }],
    },
  })],
});

// --- DataSet, Template --------------------------------------------------------------------------
add('dataset', {
  timestamp: T, seq: 3,
  metrics: [{
    name: 'table', type: 'DataSet',
    value: {
      numOfColumns: 12,
      columns: ['i8', 'i16', 'i32', 'i64', 'u8', 'u16', 'u32', 'u64', 'f', 'd', 'b', 's'],
      types: ['Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64', 'Float', 'Double', 'Boolean', 'String'],
      rows: [
        [-1, -300, -70000, Long.fromString('-5000000000'), 250, 60000, 4000000000, Long.fromString('18446744073709551615', true), 2.5, -0.125, true, 'row one'],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false, ''],
      ],
    },
  }, {
    name: 'empty-table', type: 'DataSet', value: { numOfColumns: 1, columns: ['only'], types: ['Text'], rows: [] },
  }, {
    name: 'dates', type: 'DataSet', value: { numOfColumns: 2, columns: ['when', 'what'], types: ['DateTime', 'Text'], rows: [[T, 'start'], [T + 5, 'stop']] },
  }],
}, {
  timestamp: T, seq: 3,
  metrics: [m({
    name: 'table', datatype: 'DataSet',
    value: {
      columns: ['i8', 'i16', 'i32', 'i64', 'u8', 'u16', 'u32', 'u64', 'f', 'd', 'b', 's'],
      types: ['Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64', 'Float', 'Double', 'Boolean', 'String'],
      rows: [
        [-1, -300, -70000, big('-5000000000'), 250, 60000, 4000000000, big('18446744073709551615'), 2.5, -0.125, true, 'row one'],
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false, ''],
      ],
    },
  }), m({
    name: 'empty-table', datatype: 'DataSet', value: { columns: ['only'], types: ['Text'], rows: [] },
  }), m({
    name: 'dates', datatype: 'DataSet', value: { columns: ['when', 'what'], types: ['DateTime', 'Text'], rows: [[T, 'start'], [T + 5, 'stop']] },
  })],
});

add('template', {
  timestamp: T, seq: 4,
  metrics: [{
    name: 'Motor', type: 'Template',
    value: {
      version: 'v1.2', isDefinition: true,
      metrics: [
        { name: 'rpm', type: 'UInt32', value: 0 },
        { name: 'label', type: 'String', value: 'motor' },
      ],
      parameters: [
        { name: 'size', type: 'Int32', value: -7 },
        { name: 'limit', type: 'Float', value: 2.5 },
        { name: 'owner', type: 'String', value: 'plant 1' },
        { name: 'on', type: 'Boolean', value: false },
        { name: 'serial', type: 'UInt64', value: Long.fromString('12345678901234567890', true) },
      ],
    },
  }, {
    name: 'Motors/M1', alias: 9, type: 'Template',
    value: {
      templateRef: 'Motor', isDefinition: false,
      metrics: [
        { name: 'rpm', type: 'UInt32', value: 1450, timestamp: T },
        { name: 'label', type: 'String', value: null },
        {
          name: 'Gearbox', type: 'Template',
          value: { templateRef: 'Gearbox', metrics: [{ name: 'ratio', type: 'Double', value: 3.5, properties: { unit: { type: 'String', value: ':1' } } }] },
        },
      ],
      parameters: [{ name: 'size', type: 'Int32', value: 11 }],
    },
  }],
}, {
  timestamp: T, seq: 4,
  metrics: [m({
    name: 'Motor', datatype: 'Template',
    value: {
      version: 'v1.2', is_definition: true,
      metrics: [
        m({ name: 'rpm', datatype: 'UInt32', value: 0 }),
        m({ name: 'label', datatype: 'String', value: 'motor' }),
      ],
      parameters: [
        { name: 'size', type: 'Int32', value: -7 },
        { name: 'limit', type: 'Float', value: 2.5 },
        { name: 'owner', type: 'String', value: 'plant 1' },
        { name: 'on', type: 'Boolean', value: false },
        { name: 'serial', type: 'UInt64', value: big('12345678901234567890') },
      ],
    },
  }), m({
    name: 'Motors/M1', alias: 9, datatype: 'Template',
    value: {
      template_ref: 'Motor', is_definition: false,
      metrics: [
        m({ name: 'rpm', datatype: 'UInt32', value: 1450, timestamp: T }),
        m({ name: 'label', datatype: 'String', value: null, is_null: true }),
        m({
          name: 'Gearbox', datatype: 'Template',
          value: {
            template_ref: 'Gearbox', is_definition: false,
            metrics: [m({ name: 'ratio', datatype: 'Double', value: 3.5, properties: { unit: ':1' } })],
            parameters: [],
          },
        }),
      ],
      parameters: [{ name: 'size', type: 'Int32', value: 11 }],
    },
  })],
});

// --- arrays (packed here: Tahu JS 1.0.3 has none) -------------------------------------------------
function packed(width, write, values) {
  const b = Buffer.alloc(width * values.length);
  values.forEach((v, i) => write.call(b, v, i * width));
  return b;
}
function booleans(values) {
  const b = Buffer.alloc(4 + Math.ceil(values.length / 8));
  b.writeUInt32LE(values.length, 0);
  values.forEach((v, i) => { if (v) b[4 + (i >> 3)] |= 0x80 >> (i & 7); });
  return b;
}
function strings(values) {
  return Buffer.concat(values.map((s) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])])));
}
const B = Buffer.prototype;
const arrays = [
  ['Int8Array', 22, packed(1, B.writeInt8, [-23, 123, -128, 127]), [-23, 123, -128, 127]],
  ['Int16Array', 23, packed(2, B.writeInt16LE, [-30000, 30000, -1]), [-30000, 30000, -1]],
  ['Int32Array', 24, packed(4, B.writeInt32LE, [123456789, -987654321]), [123456789, -987654321]],
  ['Int64Array', 25, packed(8, B.writeBigInt64LE, [big('-9223372036854775808'), big('9223372036854775807'), 0n]),
    [big('-9223372036854775808'), big('9223372036854775807'), 0]],
  ['UInt8Array', 26, packed(1, B.writeUInt8, [23, 250]), [23, 250]],
  ['UInt16Array', 27, packed(2, B.writeUInt16LE, [30, 52360]), [30, 52360]],
  ['UInt32Array', 28, packed(4, B.writeUInt32LE, [52, 3293141253]), [52, 3293141253]],
  ['UInt64Array', 29, packed(8, B.writeBigUInt64LE, [52n, big('18446744073709551615')]), [52, big('18446744073709551615')]],
  ['FloatArray', 30, packed(4, B.writeFloatLE, [1.23, 89.341, NaN, -Infinity]), [f32(1.23), f32(89.341), 'NaN', '-Infinity']],
  ['DoubleArray', 31, packed(8, B.writeDoubleLE, [12.354213, 1022.9123213, Infinity]), [12.354213, 1022.9123213, 'Infinity']],
  // The specification's example: 12 elements in 0x0C 0x00 0x00 0x00 0x34 0xD0.
  ['BooleanArray', 32, booleans([false, false, true, true, false, true, false, false, true, true, false, true]),
    [false, false, true, true, false, true, false, false, true, true, false, true]],
  ['StringArray', 33, strings(['ABC', 'hello', '', 'Grüße']), ['ABC', 'hello', '', 'Grüße']],
  ['DateTimeArray', 34, packed(8, B.writeBigUInt64LE, [BigInt(T), 1256102875335n]), [T, 1256102875335]],
];
add('arrays', {
  timestamp: T, seq: 5,
  metrics: arrays.map(([type, , bytes]) => ({ name: type, type: 'Bytes', value: bytes }))
    .concat(arrays.map(([type]) => ({ name: `${type}-empty`, type: 'Bytes', value: type === 'BooleanArray' ? booleans([]) : Buffer.alloc(0) }))),
}, {
  timestamp: T, seq: 5,
  metrics: arrays.map(([type, , , values]) => m({ name: type, datatype: type, value: values }))
    .concat(arrays.map(([type]) => m({ name: `${type}-empty`, datatype: type, value: [] }))),
}, (message) => {
  // Tahu encoded Bytes (17): the datatype each metric has.
  message.metrics.forEach((metric, i) => { metric.datatype = arrays[i % arrays.length][1]; });
});

// What Tahu JS 1.0.3 itself makes of an array type: datatype 0 (Unknown), no value. tank reads
// no value out of it and says why (a value error: the metric is dead-lettered).
add('unsupported-array', {
  timestamp: T, seq: 6,
  metrics: [{ name: 'arr', type: 'Int32Array', value: [1, 2] }],
}, {
  timestamp: T, seq: 6,
  metrics: [Object.assign(m({ name: 'arr', datatype: 'Unknown', value: null }), { value_error: true })],
});

// --- output ---------------------------------------------------------------------------------------
// JSON with BigInts as plain numbers (JSON.stringify refuses them).
function toJson(v) {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map(toJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}:${toJson(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

const seeds = process.argv[2] === '--seeds' ? process.argv[3] : null;
for (const c of cases) {
  let bytes = sparkplug.encodePayload(c.payload);
  if (c.patch) {
    const message = proto.Payload.decode(bytes);
    c.patch(message);
    bytes = proto.Payload.encode(message).finish();
  }
  const buffer = Buffer.from(bytes);
  if (seeds) fs.writeFileSync(path.join(seeds, `tahu-${c.name}`), buffer);
  process.stdout.write(`${toJson({ name: c.name, payload_hex: buffer.toString('hex'), expected: c.expected })}\n`);
}
