// Plays the user's browser through an authorization_code flow at the test
// OAuth2 server: open the authorize URL, follow redirects, sign in at the
// login page and continue at the consent page, until the provider redirects
// to the client's redirect URI, which is printed and not fetched.
//
// Usage: node browser.mjs <authorize URL> [login]
// Exits 1, saying where it got stuck (status and URL path only), if a page
// is not what a sign-in or consent step looks like; 20 s at most.
const [authorizeUrl, login = 'alice'] = process.argv.slice(2);
const callback = 'http://127.0.0.1/callback';
const jar = new Map();
setTimeout(() => fail('gave up after 20 s'), 20000).unref();

function fail(why) {
  process.stderr.write(`browser: ${why}\n`);
  process.exit(1);
}

function remember(res) {
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const i = pair.indexOf('=');
    jar.set(pair.slice(0, i), pair.slice(i + 1));
  }
}

async function request(url, body) {
  const res = await fetch(url, {
    method: body ? 'POST' : 'GET',
    redirect: 'manual',
    headers: {
      cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      ...(body ? { 'content-type': 'application/x-www-form-urlencoded' } : {}),
    },
    body: body ? new URLSearchParams(body).toString() : undefined,
  });
  remember(res);
  return res;
}

// The page's form: where it posts, and which prompt it answers.
function form(html, base) {
  const action = /<form[^>]*action="([^"]+)"/.exec(html);
  const prompt = /name="prompt" value="([^"]+)"/.exec(html);
  if (!action || !prompt) return null;
  return { url: new URL(action[1].replace(/&amp;/g, '&'), base).href, prompt: prompt[1] };
}

let url = authorizeUrl;
let body = null;
for (let step = 0; step < 20; step++) {
  const res = await request(url, body);
  body = null;
  const location = res.headers.get('location');
  if (res.status >= 300 && res.status < 400 && location) {
    const next = new URL(location, url).href;
    if (next.startsWith(callback)) {
      console.log(next);
      process.exit(0);
    }
    url = next;
    continue;
  }
  const page = res.status === 200 ? form(await res.text(), url) : null;
  if (!page) fail(`unexpected HTTP ${res.status} at ${new URL(url).pathname}`);
  url = page.url;
  body = page.prompt === 'login'
    ? { prompt: 'login', login, password: 'any' }
    : { prompt: page.prompt };
}
fail('too many steps');
