import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  CloseCode,
  FrameType,
  HEADER_SIZE,
  INITIAL_WINDOW,
  isReason,
  MAX_DATA_PAYLOAD,
  MAX_FRAME_PAYLOAD,
  MAX_HOST_LENGTH,
  PROTOCOL_VERSION,
  Reason,
  reasonName,
  StreamKind,
} from '../src/tunnel/constants.js';

// Every value below is on the wire. If one of these assertions fails, the change is a protocol
// change: update docs/protocol.md and PROTOCOL_VERSION deliberately, then this pin.

describe('wire constants are pinned', () => {
  test('sizes and version', () => {
    assert.equal(PROTOCOL_VERSION, 1);
    assert.equal(HEADER_SIZE, 9);
    assert.equal(MAX_FRAME_PAYLOAD, 1_048_576);
    assert.equal(MAX_DATA_PAYLOAD, 65_536);
    assert.equal(INITIAL_WINDOW, 262_144);
    assert.equal(MAX_HOST_LENGTH, 255);
  });

  test('sizes are consistent with each other', () => {
    assert.ok(MAX_DATA_PAYLOAD <= MAX_FRAME_PAYLOAD, 'a DATA frame a sender produces is decodable');
    assert.ok(MAX_DATA_PAYLOAD <= INITIAL_WINDOW, 'one full DATA frame fits in a fresh window');
    assert.ok(MAX_HOST_LENGTH <= 0xff, 'the host length is a u8');
  });

  test('FrameType', () => {
    assert.deepStrictEqual(FrameType, {
      HELLO: 0x01,
      HELLO_OK: 0x02,
      OPEN: 0x03,
      OPEN_OK: 0x04,
      OPEN_ERROR: 0x05,
      DATA: 0x06,
      WINDOW: 0x07,
      FIN: 0x08,
      RESET: 0x09,
      GOAWAY: 0x0a,
    });
  });

  test('StreamKind', () => {
    assert.deepStrictEqual(StreamKind, { TCP: 0x01, UDP: 0x02 });
  });

  test('Reason', () => {
    assert.deepStrictEqual(Reason, {
      NORMAL: 0x00,
      FORBIDDEN: 0x01,
      CONNECTION_REFUSED: 0x02,
      HOST_UNREACHABLE: 0x03,
      NETWORK_UNREACHABLE: 0x04,
      DNS_FAILURE: 0x05,
      DIAL_TIMEOUT: 0x06,
      GOING_AWAY: 0x07,
      UNSUPPORTED: 0x08,
      CONNECTION_RESET: 0x09,
      CANCELLED: 0x0a,
      PROTOCOL_ERROR: 0x0b,
      INTERNAL_ERROR: 0x0c,
      FLOW_CONTROL_ERROR: 0x0d,
      SESSION_CLOSED: 0x0e,
    });
  });

  test('CloseCode', () => {
    assert.deepStrictEqual(CloseCode, {
      NORMAL: 1000,
      GOING_AWAY: 1001,
      PROTOCOL_ERROR: 4000,
      HANDSHAKE_TIMEOUT: 4001,
      UNSUPPORTED_VERSION: 4002,
      UNAUTHORIZED: 4003,
      GROUP_PASSWORD_MISMATCH: 4004,
      HEARTBEAT_TIMEOUT: 4006,
      RATE_LIMITED: 4007,
    });
  });
});

describe('code tables are well formed', () => {
  for (const [name, table] of Object.entries({ FrameType, StreamKind, Reason, CloseCode })) {
    test(`${name} values are unique`, () => {
      const values = Object.values(table);
      assert.equal(new Set(values).size, values.length);
    });
  }

  test('frame types, kinds and reasons fit in a u8', () => {
    for (const value of [
      ...Object.values(FrameType),
      ...Object.values(StreamKind),
      ...Object.values(Reason),
    ]) {
      assert.ok(Number.isInteger(value) && value >= 0 && value <= 0xff, `${value} is a u8`);
    }
  });

  test('close codes are the standard normal/going-away or in the private 4000-4999 range', () => {
    for (const value of Object.values(CloseCode)) {
      assert.ok(value === 1000 || value === 1001 || (value >= 4000 && value <= 4999), `${value}`);
    }
  });

  test('isReason accepts exactly the Reason values', () => {
    for (let value = 0; value <= 0xff; value++) {
      assert.equal(isReason(value), Object.values(Reason).includes(value as Reason), `${value}`);
    }
  });

  test('reasonName gives the lower-case name, and marks unknown codes', () => {
    for (const [name, value] of Object.entries(Reason)) {
      assert.equal(reasonName(value), name.toLowerCase());
    }
    assert.equal(reasonName(0x63), 'unknown(99)');
  });
});

describe('docs/protocol.md agrees with the constants', () => {
  const doc = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');

  /** The text of the section whose heading starts with `heading`, up to the next heading. */
  function section(heading: string): string {
    const start = doc.indexOf(`\n${heading}`);
    assert.ok(start >= 0, `docs/protocol.md has a section "${heading}"`);
    const end = doc.indexOf('\n#', start + 1);
    return doc.slice(start, end < 0 ? undefined : end);
  }

  /** Table rows of a section as [name, value] pairs, using `pattern` with groups (value, name). */
  function rows(text: string, pattern: RegExp): Record<string, number> {
    const entries: Record<string, number> = {};
    for (const match of text.matchAll(pattern)) entries[match[2]] = Number(match[1]);
    return entries;
  }

  const hexRow = /^\| `(0x[0-9a-f]{2})`\s*\| `([A-Z_]+)`/gm;

  test('the frame type table', () => {
    assert.deepStrictEqual(rows(section('### 2.3'), hexRow), { ...FrameType });
  });

  test('the reason code table', () => {
    assert.deepStrictEqual(rows(section('### 2.5'), hexRow), { ...Reason });
  });

  test('the close code table', () => {
    assert.deepStrictEqual(rows(section('### 2.6'), /^\| (\d{4}) \| `([A-Z_]+)`/gm), {
      ...CloseCode,
    });
  });

  test('the constants table', () => {
    const documented: Record<string, number> = {};
    for (const match of section('### 2.1').matchAll(/^\| `([A-Z_]+)`\s*\| (\d+)/gm)) {
      documented[match[1]] = Number(match[2]);
    }
    assert.deepStrictEqual(documented, {
      PROTOCOL_VERSION,
      HEADER_SIZE,
      MAX_FRAME_PAYLOAD,
      MAX_DATA_PAYLOAD,
      INITIAL_WINDOW,
      MAX_HOST_LENGTH,
    });
  });

  test('the OPEN kinds named in the payload layout', () => {
    const hex = (value: number) => `\`0x${value.toString(16).padStart(2, '0')}\``;
    assert.ok(doc.includes(`${hex(StreamKind.TCP)} TCP, ${hex(StreamKind.UDP)} UDP`));
  });
});
