// receipts serve: live updates of the list, "copy as JSON", and reloading a receipt whose status moved.
// Data is only ever put into the page with textContent / element properties, never as HTML.
'use strict';
(function () {
  // Opened with the link `receipts serve` printed (?token=…): the answer set the cookie that the next
  // requests carry, so the token leaves the address bar and the history.
  const here = new URL(window.location.href);
  if (here.searchParams.has('token')) {
    here.searchParams.delete('token');
    window.history.replaceState(null, '', here.pathname + here.search + here.hash);
  }

  const main = document.getElementById('main');
  if (!main) return;

  function safeHref(h) {
    return typeof h === 'string' && h.charAt(0) === '/' && h.charAt(1) !== '/' && h.charAt(1) !== '\\' ? h : null;
  }

  function cell(c) {
    const td = document.createElement('td');
    let target = td;
    if (c.c && c.c.indexOf('badge') >= 0) {
      const span = document.createElement('span');
      span.className = c.c;
      if (c.ti) span.title = c.ti;
      td.appendChild(span);
      target = span;
    } else {
      if (c.c) td.className = c.c;
      if (c.ti) td.title = c.ti;
    }
    const href = safeHref(c.h);
    if (href) {
      const a = document.createElement('a');
      a.href = href;
      a.textContent = c.t;
      target.appendChild(a);
    } else {
      target.textContent = c.t;
    }
    return td;
  }

  function renderRows(data) {
    const tbody = document.getElementById('rows');
    if (!tbody) return;
    const before = new Set(Array.from(tbody.querySelectorAll('tr[data-id]')).map(tr => tr.dataset.id));
    const frag = document.createDocumentFragment();
    for (const row of data.rows) {
      const tr = document.createElement('tr');
      tr.dataset.id = row.id;
      if (!before.has(row.id)) tr.className = 'new';
      for (const c of row.cells) tr.appendChild(cell(c));
      frag.appendChild(tr);
    }
    tbody.replaceChildren(frag);
    const total = document.getElementById('total');
    if (total) total.textContent = data.total_text;
    const fresh = document.getElementById('freshness');
    if (fresh && data.freshness) fresh.textContent = data.freshness;
  }

  function refreshCharts(version) {
    for (const img of document.querySelectorAll('#charts img')) {
      const url = new URL(img.src, window.location.href);
      url.searchParams.set('v', version);
      img.src = url.pathname + url.search;
    }
  }

  function setLive(ok) {
    const el = document.getElementById('live');
    if (!el) return;
    el.textContent = ok ? 'live' : 'live (reconnecting…)';
    el.className = ok ? 'live' : 'live off';
  }

  const liveUrl = main.dataset.live;
  if (liveUrl) {
    let version = main.dataset.version;
    const tick = async function () {
      try {
        const sep = liveUrl.indexOf('?') >= 0 ? '&' : '?';
        const resp = await fetch(liveUrl + sep + 'v=' + encodeURIComponent(version), {cache: 'no-store'});
        if (!resp.ok) throw new Error(String(resp.status));
        const data = await resp.json();
        if (data.changed) {
          renderRows(data);
          version = String(data.version);
          main.dataset.version = version;
          refreshCharts(version);
        }
        setLive(true);
      } catch (e) {
        setLive(false);
      }
      window.setTimeout(tick, 1500);
    };
    window.setTimeout(tick, 1500);
  }

  const watch = main.dataset.watch;
  if (watch) {
    const check = async function () {
      try {
        const resp = await fetch(watch, {cache: 'no-store'});
        if (resp.ok) {
          const data = await resp.json();
          if (data.stamp && data.stamp !== main.dataset.stamp) {
            window.location.reload();
            return;
          }
        }
      } catch (e) { /* try again */ }
      window.setTimeout(check, 3000);
    };
    window.setTimeout(check, 3000);
  }

  const copy = document.getElementById('copy-json');
  if (copy) {
    copy.addEventListener('click', async function () {
      const pre = document.getElementById('receipt-json');
      const text = pre.textContent;
      let done = false;
      try {
        await navigator.clipboard.writeText(text);
        done = true;
      } catch (e) {
        const details = pre.closest('details');
        if (details) details.open = true;
        const range = document.createRange();
        range.selectNodeContents(pre);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        done = document.execCommand('copy');
      }
      const note = document.getElementById('copied');
      if (note) {
        note.textContent = done ? 'copied' : 'select the JSON below and copy it';
        note.hidden = false;
      }
    });
  }
})();
