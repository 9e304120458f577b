/**
 * End to end with a real browser: headless Chromium (Debian's `/usr/bin/chromium`, driven by
 * playwright-core) loads a colourful page from a local web server, once through the HTTP proxy
 * with credentials and once through a SOCKS5 listener bound to a group without credentials, as
 * Chromium's SOCKS5 has no username/password. The screenshot must show the page's colours, and
 * the page must have come through the tunnel.
 */
import './helpers/fail-on-unhandled.js';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { type Browser, chromium, type LaunchOptions } from 'playwright-core';
import { PNG } from 'pngjs';
import { GROUP, PASSWORD, startTunnel } from './helpers/e2e.js';
import { type HttpTarget, nextReleasedStream, startHttpServer } from './helpers/targets.js';

const CHROMIUM = '/usr/bin/chromium';
const SIZE = 400;
/** Four horizontal bands, top to bottom, each a quarter of the page. */
const BANDS: readonly (readonly [number, number, number])[] = [
  [0xe6, 0x19, 0x4b],
  [0x3c, 0xb4, 0x4b],
  [0x43, 0x63, 0xd8],
  [0xff, 0xe1, 0x19],
];
/** How far a channel may drift (colour management, anti-aliasing) and still count as the band. */
const TOLERANCE = 12;

function hex([r, g, b]: readonly [number, number, number]): string {
  return `#${[r, g, b].map((channel) => channel.toString(16).padStart(2, '0')).join('')}`;
}

function pageHtml(token: string): string {
  const bands = BANDS.map(
    (colour, index) =>
      `<div style="height:${SIZE / 4}px;background:${hex(colour)}">${index === 0 ? `<span id="token">${token}</span>` : ''}</div>`,
  ).join('');
  return `<!doctype html><html><head><title>postern ${token}</title></head><body style="margin:0">${bands}</body></html>`;
}

/**
 * Checks the screenshot shows each band's colour in the middle of its band (away from the text)
 * and holds several colours: a blank page, an error page or a page from elsewhere fails.
 */
function assertShowsBands(png: Buffer): void {
  const image = PNG.sync.read(png);
  assert.equal(image.width, SIZE);
  assert.equal(image.height, SIZE);
  const pixel = (x: number, y: number) => {
    const offset = (y * image.width + x) * 4;
    return [image.data[offset]!, image.data[offset + 1]!, image.data[offset + 2]!] as const;
  };
  const colours = new Set<string>();
  for (let y = 0; y < image.height; y += 10) {
    for (let x = 0; x < image.width; x += 10) colours.add(hex(pixel(x, y)));
  }
  assert.ok(colours.size >= BANDS.length, `the screenshot has only ${colours.size} colour(s)`);
  BANDS.forEach((expected, index) => {
    const seen = pixel(SIZE - 20, Math.round((index + 0.5) * (SIZE / 4)));
    const close = seen.every((channel, c) => Math.abs(channel - expected[c]!) <= TOLERANCE);
    assert.ok(close, `band ${index}: expected ${hex(expected)}, saw ${hex(seen)}`);
  });
}

/** Rejects with `message` when `promise` has not settled within `ms`: a deadline, not a sleep. */
async function within<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

const skip = existsSync(CHROMIUM)
  ? false
  : `${CHROMIUM} is not installed (apt-get install chromium; .ci/run installs it)`;

describe('headless Chromium through the gateway', { skip, timeout: 120_000 }, () => {
  let tunnel: Awaited<ReturnType<typeof startTunnel>>;
  let web: HttpTarget;
  const token = randomBytes(8).toString('hex');
  const browsers = new Set<Browser>();

  before(async () => {
    tunnel = await startTunnel({
      proxy: {
        http: { listen_addr: '127.0.0.1:0' },
        socks5: {
          listen_addr: '127.0.0.1:0',
          allowed_sources: ['127.0.0.0/8', '::1'],
          no_auth_group: GROUP,
        },
      },
    });
    web = await startHttpServer((req, res) => {
      // Close after each response, so the tunnel stream is released and the test can see it.
      res.setHeader('connection', 'close');
      if (req.url !== '/page') {
        res.statusCode = 404;
        res.end();
        return;
      }
      res.setHeader('content-type', 'text/html; charset=utf-8');
      res.end(pageHtml(token));
    });
  });

  after(async () => {
    // Every browser is closed even when a test failed half-way.
    await Promise.all([...browsers].map((browser) => browser.close()));
    await tunnel?.close();
    await web?.close();
  });

  async function launch(proxy: NonNullable<LaunchOptions['proxy']>): Promise<Browser> {
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
      // Chromium sends loopback targets direct unless `<-loopback>` is in the bypass list.
      proxy: { ...proxy, bypass: '<-loopback>' },
      timeout: 60_000,
    });
    browsers.add(browser);
    return browser;
  }

  /** Loads the page, checks what Chromium shows, and that the request went through the tunnel. */
  async function loadThroughGateway(browser: Browser): Promise<void> {
    const released = nextReleasedStream(
      tunnel.gateway,
      (stream) => stream.target.host === '127.0.0.1' && stream.target.port === web.port,
    );
    const page = await browser.newPage({ viewport: { width: SIZE, height: SIZE } });
    try {
      const response = await page.goto(`http://127.0.0.1:${web.port}/page`, { timeout: 30_000 });
      assert.equal(response?.status(), 200);
      assert.equal(await page.title(), `postern ${token}`);
      assert.equal(await page.textContent('#token'), token);
      assertShowsBands(await page.screenshot({ type: 'png' }));
    } finally {
      await page.close();
    }
    await within(released, 10_000, 'the page did not come through the tunnel');
  }

  test('through the HTTP proxy with the group credentials', async () => {
    const browser = await launch({
      server: `http://127.0.0.1:${tunnel.gateway.addresses.http!.port}`,
      username: GROUP,
      password: PASSWORD,
    });
    await loadThroughGateway(browser);
  });

  test('through the SOCKS5 listener bound to the group, without credentials', async () => {
    const browser = await launch({
      server: `socks5://127.0.0.1:${tunnel.gateway.addresses.socks5!.port}`,
    });
    await loadThroughGateway(browser);
  });
});
