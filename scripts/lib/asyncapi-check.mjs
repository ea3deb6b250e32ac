// The checks of scripts/asyncapi-check (run it, not this file):
//
//   node scripts/lib/asyncapi-check.mjs <install dir> <asyncapi.yaml>
//
// <install dir> holds node_modules/ with @asyncapi/parser and ajv, as
// scripts/lib/asyncapi-node/package-lock.json pins them.
//
// 1. @asyncapi/parser parses the document, resolving the payloads' $refs to
//    the JSON Schema files beside it (./schema/*.schema.json). Any
//    diagnostic of severity error fails (a bad $ref, a parameter the
//    address does not name, a binding outside the mqtt binding's schema);
//    warnings are printed.
// 2. Every message's payload is a resolved schema (the file's title, no
//    $ref left), and every example validates against it (JSON Schema
//    2020-12, as the files declare; the parser does not check examples in
//    AsyncAPI 3 documents).
// 3. Against the mqtt.md beside the document (docs/mqtt.md):
//    - its "Topics" table and the channels name the same addresses, both
//      ways (so every channel's leaf is a leaf of the table's topics);
//    - its "retained" column: yes/no is the retain flag of the gateway's
//      send operations on that channel; anything else ("by the IOC's
//      choice") is a topic the gateway receives, never sends;
//    - "QoS N for everything the gateway publishes": the qos of every send
//      operation and of the last will; the QoS of the command subscription
//      ("subscribes to `filter` (QoS N)"): the qos of the receive
//      operation whose channel the filter matches;
//    - the last will in "Status": the server's mqtt binding `lastWill`
//      (same payload, retained, on a channel's address, valid against that
//      channel's payload schema).
// 4. info.version is the contract crate's version (contract/Cargo.toml).
//
// Prints one summary line and exits 0, or prints every problem and exits 1.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [installDir, docArg] = process.argv.slice(2);
if (!installDir || !docArg) {
  console.error('usage: node scripts/lib/asyncapi-check.mjs <install dir> <asyncapi.yaml>');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(installDir), 'package.json'));
const { Parser, fromFile, DiagnosticSeverity } = require('@asyncapi/parser');
const Ajv2020 = require('ajv/dist/2020').default;
const parserVersion = JSON.parse(
  readFileSync(path.join(installDir, 'node_modules/@asyncapi/parser/package.json'), 'utf8'),
).version;

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const docPath = path.resolve(docArg);
// Paths as printed: inside the repository relative to it, others whole.
const shown = (p) => (path.relative(repo, p).startsWith('..') ? p : path.relative(repo, p));
const docShown = shown(docPath);
const mdPath = path.join(path.dirname(docPath), 'mqtt.md');
const problems = [];
const problem = (msg) => problems.push(msg);

function finish() {
  if (problems.length > 0) {
    console.error(`asyncapi-check: ${docShown}: FAILED, ${problems.length} problem(s):`);
    for (const p of problems) console.error(`  - ${p}`);
    process.exit(1);
  }
}

// 1. Parse.
const { document, diagnostics } = await fromFile(new Parser(), docPath).parse();
const where = (d) => {
  const at = d.path && d.path.length ? d.path.join('.') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}` : '';
  const file = d.source ? shown(d.source) : docShown;
  return `${file}${line} ${at}`;
};
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning);
for (const d of warnings) console.error(`asyncapi-check: warning: ${where(d)}: ${d.message} [${d.code}]`);
for (const d of errors) problem(`parser error: ${where(d)}: ${d.message} [${d.code}]`);
if (!document && errors.length === 0) problem('the parser returned no document');
finish();

// 2. Payloads resolved, examples valid.
const messages = document.allMessages().all();
let examples = 0;
const validators = new Map();
function validator(message) {
  if (!validators.has(message.id())) {
    // One Ajv per schema: the files' $id would clash in one instance.
    // strict: false lets the parser's x-parser-* keys through.
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    validators.set(message.id(), ajv.compile(message.payload().json()));
  }
  return validators.get(message.id());
}
const ajvErrors = (v) =>
  v.errors.map((e) => `${e.instancePath || '/'} ${e.message}`).join('; ');
for (const m of messages) {
  const payload = m.payload();
  const json = payload && payload.json();
  if (!json || typeof json !== 'object' || '$ref' in json || !json.title) {
    problem(`message ${m.id()}: its payload is not a resolved schema file (no title)`);
    continue;
  }
  let validate;
  try {
    validate = validator(m);
  } catch (e) {
    problem(`message ${m.id()}: its payload schema does not compile: ${e.message}`);
    continue;
  }
  for (const ex of m.examples().all()) {
    examples += 1;
    if (!validate(ex.payload())) {
      problem(`message ${m.id()}, example ${ex.name() ?? examples}: ${ajvErrors(validate)}`);
    }
  }
}

// 3. Against docs/mqtt.md.
let md;
try {
  md = readFileSync(mdPath, 'utf8');
} catch (e) {
  problem(`cannot read ${shown(mdPath)}: ${e.message}`);
  finish();
}

// The "Topics" table: the first run of lines starting with "|" after the
// line "## Topics" and before the next "## " heading. Its first line is
// the header (columns named "topic" and "retained" are looked up by name),
// the second the |---| delimiter, every further line a row. Cells are
// split on "|" (no cell of the table may hold an escaped \| ); the topic is
// the text between the first pair of backticks in the "topic" cell.
function topicsTable(text) {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === '## Topics');
  if (start < 0) return { error: 'no "## Topics" heading' };
  const table = [];
  for (const l of lines.slice(start + 1)) {
    if (l.startsWith('## ')) break;
    if (l.trimStart().startsWith('|')) table.push(l.trim());
    else if (table.length > 0) break;
  }
  if (table.length < 3) return { error: 'no table with rows under "## Topics"' };
  const cells = (l) => l.replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
  const head = cells(table[0]).map((c) => c.toLowerCase());
  const topicCol = head.indexOf('topic');
  const retainedCol = head.indexOf('retained');
  if (topicCol < 0 || retainedCol < 0) {
    return { error: `the table's header has no "topic" or "retained" column: ${table[0]}` };
  }
  if (!/^\|?\s*:?-{3,}/.test(table[1])) return { error: `no |---| line under the header: ${table[1]}` };
  const rows = [];
  for (const l of table.slice(2)) {
    const c = cells(l);
    const topic = /`([^`]+)`/.exec(c[topicCol] ?? '');
    if (!topic) return { error: `a row with no topic in backticks: ${l}` };
    rows.push({ topic: topic[1], retained: (c[retainedCol] ?? '').toLowerCase() });
  }
  return { rows };
}

const leaf = (address) => address.split('/').pop();
const channels = document.channels().all();
const operations = document.operations().all();
const byAddress = new Map(channels.map((c) => [c.address(), c]));
const table = topicsTable(md);
if (table.error) {
  problem(`${shown(mdPath)}: ${table.error}`);
  finish();
}
const tableTopics = new Set(table.rows.map((r) => r.topic));
const tableLeaves = new Set([...tableTopics].map(leaf));
for (const c of channels) {
  if (!tableLeaves.has(leaf(c.address()))) {
    problem(`channel ${c.id()} (${c.address()}): its leaf "${leaf(c.address())}" is no topic's leaf in mqtt.md's Topics table`);
  } else if (!tableTopics.has(c.address())) {
    problem(`channel ${c.id()} (${c.address()}) is not in mqtt.md's Topics table`);
  }
}
for (const t of tableTopics) {
  if (!byAddress.has(t)) problem(`mqtt.md's Topics table has ${t}, which no channel's address is`);
}

const mqttOf = (op) => {
  const b = op.bindings().get('mqtt');
  return b ? b.value() : undefined;
};
const opsOf = (c) => operations.filter((o) => o.channels().all().some((oc) => oc.id() === c.id()));
for (const c of channels) {
  if (opsOf(c).length === 0) problem(`channel ${c.id()} (${c.address()}) has no operation`);
}
for (const o of operations) {
  const b = mqttOf(o);
  if (!b || b.qos === undefined) problem(`operation ${o.id()}: no mqtt binding with qos`);
  else if (o.action() === 'send' && b.retain === undefined) problem(`operation ${o.id()}: its mqtt binding has no retain`);
}
for (const row of table.rows) {
  const c = byAddress.get(row.topic);
  if (!c) continue;
  const sends = opsOf(c).filter((o) => o.action() === 'send');
  const receives = opsOf(c).filter((o) => o.action() === 'receive');
  if (row.retained === 'yes' || row.retained === 'no') {
    const want = row.retained === 'yes';
    if (sends.length === 0) problem(`${row.topic}: the gateway publishes it (retained: ${row.retained}) but no send operation is on channel ${c.id()}`);
    for (const o of sends) {
      const b = mqttOf(o);
      if (b && b.retain !== undefined && b.retain !== want) {
        problem(`operation ${o.id()}: retain ${b.retain}, but mqtt.md says retained: ${row.retained} for ${row.topic}`);
      }
    }
  } else {
    // Not a yes or no: a topic the IOC publishes and chooses the flag of.
    if (receives.length === 0 || sends.length > 0) {
      problem(`${row.topic}: retained "${row.retained}" (the IOC's topic), so channel ${c.id()} wants receive operations only`);
    }
  }
}

const publishQos = /QoS (\d) for everything the gateway publishes/.exec(md);
if (!publishQos) problem('mqtt.md: no "QoS N for everything the gateway publishes"');
const qos = publishQos ? Number(publishQos[1]) : undefined;
for (const o of operations.filter((op) => op.action() === 'send')) {
  const b = mqttOf(o);
  if (qos !== undefined && b && b.qos !== undefined && b.qos !== qos) {
    problem(`operation ${o.id()}: qos ${b.qos}, but mqtt.md says QoS ${qos} for everything the gateway publishes`);
  }
}
// A filter matches an address when each level is equal or the filter's
// level is "+" where the address has a parameter of its own.
const matches = (filter, address) => {
  const f = filter.split('/');
  const a = address.split('/');
  return f.length === a.length && f.every((l, i) => l === a[i] || (l === '+' && /^\{[^}]+\}$/.test(a[i])));
};
const subscription = /subscribes to `([^`]+)` \(QoS (\d)\)/.exec(md);
if (!subscription) problem('mqtt.md: no "subscribes to `filter` (QoS N)"');
const receives = operations.filter((o) => o.action() === 'receive');
for (const o of receives) {
  const addresses = o.channels().all().map((c) => c.address());
  if (subscription && !addresses.some((a) => matches(subscription[1], a))) {
    problem(`operation ${o.id()} receives on ${addresses.join(', ')}, which mqtt.md's subscription ${subscription[1]} does not match`);
  }
  const b = mqttOf(o);
  if (subscription && b && b.qos !== Number(subscription[2])) {
    problem(`operation ${o.id()}: qos ${b.qos}, but mqtt.md subscribes with QoS ${subscription[2]}`);
  }
}

// The last will.
const mdWill = /last will, published by the broker[^`]*`(\{[^`]*\})`/.exec(md);
if (!mdWill) problem('mqtt.md: no "last will, published by the broker ...: `{...}`"');
let wills = 0;
for (const s of document.servers().all()) {
  const b = s.bindings().get('mqtt');
  const will = b && b.value().lastWill;
  if (!will) {
    problem(`server ${s.id()}: its mqtt binding has no lastWill`);
    continue;
  }
  wills += 1;
  const c = byAddress.get(will.topic);
  if (!c) {
    problem(`server ${s.id()}: lastWill.topic ${will.topic} is no channel's address`);
  } else {
    const row = table.rows.find((r) => r.topic === will.topic);
    if (row && row.retained !== 'yes') problem(`lastWill on ${will.topic}, which mqtt.md says is not retained`);
    let payload;
    try {
      payload = JSON.parse(will.message);
    } catch (e) {
      problem(`server ${s.id()}: lastWill.message is not JSON: ${e.message}`);
    }
    if (payload !== undefined) {
      const valid = c.messages().all().some((m) => validators.has(m.id()) && validators.get(m.id())(payload));
      if (!valid) problem(`server ${s.id()}: lastWill.message is valid against no payload of channel ${c.id()}`);
      if (mdWill && JSON.stringify(payload) !== JSON.stringify(JSON.parse(mdWill[1]))) {
        problem(`server ${s.id()}: lastWill.message ${will.message}, but mqtt.md's last will is ${mdWill[1]}`);
      }
    }
  }
  if (will.retain !== true) problem(`server ${s.id()}: lastWill is not retained`);
  if (qos !== undefined && will.qos !== qos) problem(`server ${s.id()}: lastWill.qos ${will.qos}, not ${qos}`);
}

// 4. The contract's version.
const cargo = readFileSync(path.join(repo, 'contract/Cargo.toml'), 'utf8');
const crateVersion = /^version\s*=\s*"([^"]+)"/m.exec(cargo);
if (!crateVersion) problem('contract/Cargo.toml: no version');
else if (document.info().version() !== crateVersion[1]) {
  problem(`info.version ${document.info().version()}, but the contract crate (contract/Cargo.toml) is ${crateVersion[1]}`);
}

finish();
const sends = operations.filter((o) => o.action() === 'send').length;
console.log(
  `asyncapi-check: ${docShown} OK (AsyncAPI ${document.version()}, @asyncapi/parser ${parserVersion}): ` +
    `${channels.length} channels, ${operations.length} operations (${sends} send, ${operations.length - sends} receive), ` +
    `${messages.length} messages (${examples} examples valid), last will on ${wills} server(s); ` +
    `the ${table.rows.length} topics of ${shown(mdPath)} match; ${warnings.length} warning(s)`,
);
