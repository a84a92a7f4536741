// The live dashboard of the dashboard module (issue 17).
//
// It reads the module's JSON reports and its Server-Sent Events stream from
// its own origin and draws with the DOM and SVG alone: no third-party code,
// so that it works on a server without internet access and under a strict
// Content-Security-Policy (no inline script, no inline style in the markup).
//
// Every text that comes from the server goes into the page with textContent:
// paths and other fields are chosen by clients and must never become markup.
'use strict';

(() => {
    // The slow reports are refreshed this often, and also whenever the
    // summary's download count changes.
    const SLOW_REFRESH_MS = 10000;
    // The module sends an update every second; a stream without one for this
    // long is replaced. This covers a stalled connection (a proxy holding a
    // dead socket) and an EventSource that gave up for good after an HTTP
    // error status (a restarting server's 503), which it does not retry.
    const STALE_AFTER_MS = 5000;
    // A report that has not answered by then is shown as failed; the next
    // refresh asks again.
    const FETCH_TIMEOUT_MS = 15000;
    const BANDWIDTH_WINDOW_S = 120;
    const TIMESERIES_QUERY = {bucket: 'minute', since: '2h'};
    const TIMESERIES_SPAN_S = 2 * 3600;
    const BUCKET_S = 60;
    // A busy server has thousands of files and open downloads; a table that
    // long is unreadable and slow to redraw every second.
    const MAX_FILES = 25;
    const MAX_IN_PROGRESS = 100;
    const DASH = '–';

    const token = new URLSearchParams(location.search).get('access_token');

    const state = {
        updates: 0,
        lastDownloads: null,
        lastSample: null,
        bandwidth: [],
        clockOffset: 0,
        lastEventAt: 0,
        source: null,
        refreshing: null,
        refreshAgain: false,
        errors: {},
    };

    /* ---------- the API ---------- */

    // RFC 6750 §2.3: the token travels in the query string because EventSource
    // cannot set an Authorization header; the API calls carry it the same way.
    // The URLs are relative so that the page also works under a path prefix.
    function apiUrl(name, params = {}) {
        const url = new URL('api/v1/' + name, location.href);
        for (const [key, value] of Object.entries(params)) url.searchParams.set(key, value);
        if (token !== null) url.searchParams.set('access_token', token);
        return url.href;
    }

    async function fetchRows(name, params) {
        const response = await fetch(apiUrl(name, params), {
            cache: 'no-store',
            signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
        });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const body = await response.json();
        if (!Array.isArray(body.rows)) throw new Error('the answer has no rows');
        return body.rows;
    }

    // Each report is fetched and drawn on its own, so that a failing one keeps
    // its last good figures and leaves the others alone.
    async function load(name, params, render) {
        try {
            render(await fetchRows(name, params));
            setError(name, null);
        } catch (error) {
            setError(name, error.message);
        }
    }

    // A null message clears the report's error.
    function setError(name, message) {
        state.errors[name] = message;
        const failed = Object.entries(state.errors).filter(([, why]) => why !== null);
        document.getElementById('errors').textContent = failed.map(([report, why]) => `${report}: ${why}`).join('; ');
    }

    /* ---------- formatting ---------- */

    const countFormat = new Intl.NumberFormat(undefined, {maximumFractionDigits: 0});
    const decimalFormat = new Intl.NumberFormat(undefined, {minimumFractionDigits: 1, maximumFractionDigits: 1});
    const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

    const isNumber = (value) => typeof value === 'number' && Number.isFinite(value);
    const formatCount = (n) => (isNumber(n) ? countFormat.format(n) : DASH);
    const formatPercent = (p) => (isNumber(p) ? `${decimalFormat.format(p)} %` : DASH);
    const formatRate = (bytesPerSecond) => (isNumber(bytesPerSecond) ? `${formatBytes(bytesPerSecond)}/s` : DASH);
    const formatKey = (value) => (value === null || value === undefined ? '' : String(value));
    const formatText = (text) => formatKey(text) || DASH;

    // Binary units, as the server's configuration and docs speak of sizes.
    function formatBytes(n) {
        if (!isNumber(n)) return DASH;
        let value = n;
        let unit = 0;
        while (Math.abs(value) >= 1024 && unit < BYTE_UNITS.length - 1) {
            value /= 1024;
            unit += 1;
        }
        return unit === 0 ? `${countFormat.format(value)} B` : `${decimalFormat.format(value)} ${BYTE_UNITS[unit]}`;
    }

    function formatDuration(seconds) {
        if (!isNumber(seconds)) return DASH;
        if (seconds < 1) return `${countFormat.format(seconds * 1000)} ms`;
        if (seconds < 60) return `${decimalFormat.format(seconds)} s`;
        return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    }

    function formatClock(unixSeconds) {
        return new Date(unixSeconds * 1000).toLocaleTimeString([], {hour: '2-digit', minute: '2-digit'});
    }

    // The reports' times are UTC; a string without a zone would otherwise be
    // read as local time by Date.parse.
    function parseUtc(text) {
        if (typeof text !== 'string') return NaN;
        const iso = text.trim().replace(' ', 'T');
        return Date.parse(/(Z|[+-]\d\d:?\d\d)$/i.test(iso) ? iso : `${iso}Z`) / 1000;
    }

    // docs/stats.md defines completion_rate as completed / downloads (a
    // fraction) while the dashboard's API speaks of percent: computing it from
    // the two counts shows the right figure whichever the module sends.
    function completionPercent(summary) {
        const {downloads, completed} = summary;
        return isNumber(downloads) && downloads > 0 && isNumber(completed) ? (100 * completed) / downloads : null;
    }

    /* ---------- figures and tables ---------- */

    // The raw number stays in data-value (absent for null) so that scripts and
    // tests read the exact figure, not its rounded text.
    function setValue(element, value) {
        if (isNumber(value)) {
            element.dataset.value = String(value);
        } else {
            delete element.dataset.value;
        }
    }

    function showFigure(id, value, text, exact = isNumber(value) ? String(value) : '') {
        const element = document.getElementById(id);
        element.textContent = text;
        element.title = exact;
        setValue(element, value);
    }

    function renderSummary(summary) {
        showFigure('summary-downloads', summary.downloads, formatCount(summary.downloads));
        showFigure('summary-completed', summary.completed, formatCount(summary.completed));
        showFigure('summary-completion-rate', summary.completion_rate, formatPercent(completionPercent(summary)));
        const exactBytes = isNumber(summary.bytes) ? `${countFormat.format(summary.bytes)} bytes` : '';
        showFigure('summary-bytes', summary.bytes, formatBytes(summary.bytes), exactBytes);
        showFigure('summary-clients', summary.distinct_clients, formatCount(summary.distinct_clients));
        showFigure('summary-median', summary.median_duration_s, formatDuration(summary.median_duration_s));
        showFigure('summary-p95', summary.p95_duration_s, formatDuration(summary.p95_duration_s));
    }

    // Draws the summary and tells whether its download count changed.
    function updateSummary(summary) {
        renderSummary(summary);
        const changed = state.lastDownloads !== null && summary.downloads !== state.lastDownloads;
        state.lastDownloads = summary.downloads ?? null;
        return changed;
    }

    function renderMetrics(metrics) {
        showFigure('metric-connections', metrics.connections_open, formatCount(metrics.connections_open));
        showFigure('metric-requests', metrics.requests_total, formatCount(metrics.requests_total));
        showFigure('metric-in-progress', metrics.downloads_in_progress, formatCount(metrics.downloads_in_progress));
        showFigure('metric-bytes-sent', metrics.bytes_sent_total, formatBytes(metrics.bytes_sent_total));
    }

    function textCell(text, className) {
        const td = document.createElement('td');
        td.textContent = text;
        if (className) td.className = className;
        return td;
    }

    function numberCell(value, format) {
        const td = textCell(format(value), 'num');
        setValue(td, value);
        return td;
    }

    // coverage is a fraction of the file, 0 to 1, as in the downloads report.
    function progressCell(row) {
        const percent = isNumber(row.coverage) ? row.coverage * 100 : null;
        const td = textCell(formatPercent(percent), 'num');
        setValue(td, row.coverage);
        td.classList.add('coverage');
        const bar = document.createElement('progress');
        bar.max = 100;
        bar.value = Math.min(100, Math.max(0, percent === null ? 0 : percent));
        td.prepend(bar);
        return td;
    }

    // A column says how to draw its cell: text, a formatted number, or its own.
    const textColumn = (key, className) => (row) => textCell(formatText(row[key]), className);
    const numberColumn = (key, format) => (row) => numberCell(row[key], format);

    const TABLES = {
        files: {
            keys: ['path'],
            limit: MAX_FILES,
            columns: [
                textColumn('path', 'path'), numberColumn('downloads', formatCount),
                numberColumn('completed', formatCount), numberColumn('bytes', formatBytes),
                numberColumn('median_duration_s', formatDuration)
            ],
        },
        countries: {
            keys: ['country'],
            columns: [
                textColumn('country'), numberColumn('downloads', formatCount), numberColumn('completed', formatCount),
                numberColumn('bytes', formatBytes)
            ],
        },
        reasons: {
            keys: ['reason'],
            columns:
                [textColumn('reason'), numberColumn('requests', formatCount), numberColumn('downloads', formatCount)],
        },
        'in-progress': {
            keys: ['id', 'path'],
            limit: MAX_IN_PROGRESS,
            columns: [
                textColumn('path', 'path'), textColumn('client_ip'), textColumn('country'), progressCell,
                numberColumn('bytes', formatBytes), numberColumn('file_size', formatBytes),
                numberColumn('speed_bps', formatRate), numberColumn('requests', formatCount), textColumn('started')
            ],
        },
    };

    function tableRow(row, table) {
        const tr = document.createElement('tr');
        for (const key of table.keys) tr.dataset[key] = formatKey(row[key]);
        tr.append(...table.columns.map((column) => column(row)));
        return tr;
    }

    function emptyRow(columnCount) {
        const tr = document.createElement('tr');
        const td = textCell('Nothing yet.', 'empty');
        td.colSpan = columnCount;
        tr.append(td);
        return tr;
    }

    function renderTable(id, rows) {
        const table = TABLES[id];
        const element = document.getElementById(id);
        const shown = rows.slice(0, table.limit ?? rows.length);
        const body = shown.length ? shown.map((row) => tableRow(row, table)) : [emptyRow(table.columns.length)];
        element.tBodies[0].replaceChildren(...body);
        element.dataset.rows = String(rows.length);
        document.getElementById(`${id}-note`).textContent =
            shown.length < rows.length ? `(${shown.length} of ${rows.length})` : `(${rows.length})`;
    }

    /* ---------- charts ---------- */

    const SVG_NS = 'http://www.w3.org/2000/svg';

    function svgElement(tag, attributes = {}, textContent = null) {
        const element = document.createElementNS(SVG_NS, tag);
        for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
        if (textContent !== null) element.textContent = textContent;
        return element;
    }

    // Draws the axes of a chart into `svg` (sized by its viewBox) and returns
    // the scales that place a time and a value inside them.
    function chartFrame(svg, {start, end, max, formatValue}) {
        const {width, height} = svg.viewBox.baseVal;
        const [left, top, right, bottom] = [64, 8, width - 8, height - 20];
        const x = (time) => left + ((time - start) / (end - start)) * (right - left);
        const y = (value) => bottom - (value / max) * (bottom - top);
        const parts = [];
        for (const value of [0, max / 2, max]) {
            parts.push(svgElement('line', {class: 'grid', x1: left, x2: right, y1: y(value), y2: y(value)}));
            parts.push(svgElement(
                'text', {class: 'label', x: left - 6, y: y(value) + 4, 'text-anchor': 'end'}, formatValue(value)));
        }
        for (const [time, anchor] of [[start, 'start'], [(start + end) / 2, 'middle'], [end, 'end']]) {
            parts.push(svgElement(
                'text', {class: 'label', x: x(time), y: height - 4, 'text-anchor': anchor}, formatClock(time)));
        }
        svg.replaceChildren(...parts);
        return {x, y, bottom};
    }

    // Bars of downloads per minute with the completed ones drawn over them.
    function renderTimeseries(rows) {
        const svg = document.getElementById('timeseries-chart');
        const end = serverNow();
        const start = end - TIMESERIES_SPAN_S;
        const buckets =
            rows.map((row) => ({...row, start: parseUtc(row.time)})).filter((row) => row.start >= start - BUCKET_S);
        const max = Math.max(1, ...buckets.map((row) => (isNumber(row.downloads) ? row.downloads : 0)));
        const {x, y, bottom} = chartFrame(svg, {start, end, max: niceCeiling(max), formatValue: formatCount});
        const width = Math.max(1, x(start + BUCKET_S) - x(start) - 1);
        for (const row of buckets) {
            const tip = `${formatClock(row.start)}: ${formatCount(row.downloads)} downloads, ` +
                `${formatCount(row.completed)} completed, ${formatBytes(row.bytes)}`;
            for (const series of ['downloads', 'completed']) {
                const value = isNumber(row[series]) ? row[series] : 0;
                const bar =
                    svgElement('rect', {class: series, x: x(row.start), y: y(value), width, height: bottom - y(value)});
                bar.append(svgElement('title', {}, tip));
                svg.append(bar);
            }
        }
        svg.dataset.points = String(buckets.length);
    }

    // The bandwidth is the rate of the bytes_sent_total counter between two
    // updates; the server keeps no history of it, so the chart starts empty.
    function recordBandwidth(time, metrics) {
        const previous = state.lastSample;
        const sample = {time, bytes: metrics.bytes_sent_total};
        state.lastSample = isNumber(time) && isNumber(sample.bytes) ? sample : null;
        if (!previous || !state.lastSample) return;
        const seconds = time - previous.time;
        const bytes = sample.bytes - previous.bytes;
        // A counter that went down means the server restarted: that interval measures nothing.
        if (seconds <= 0 || bytes < 0) return;
        state.bandwidth.push({time, rate: bytes / seconds});
        while (state.bandwidth[0].time < time - BANDWIDTH_WINDOW_S) state.bandwidth.shift();
    }

    function renderBandwidth() {
        const svg = document.getElementById('bandwidth-chart');
        const samples = state.bandwidth;
        const end = samples.length ? samples[samples.length - 1].time : serverNow();
        const max = niceCeiling(Math.max(1024, ...samples.map((sample) => sample.rate)), 1024);
        const {x, y, bottom} = chartFrame(svg, {start: end - BANDWIDTH_WINDOW_S, end, max, formatValue: formatRate});
        if (samples.length > 1) {
            const points = samples.map((sample) => `${x(sample.time)},${y(sample.rate)}`);
            const area = [`${x(samples[0].time)},${bottom}`, ...points, `${x(end)},${bottom}`];
            svg.append(svgElement('polygon', {class: 'area', points: area.join(' ')}));
            svg.append(svgElement('polyline', {class: 'line', points: points.join(' ')}));
        }
        svg.dataset.points = String(samples.length);
        const latest = samples.length ? samples[samples.length - 1].rate : null;
        showFigure('bandwidth-now', latest, formatRate(latest));
    }

    // 1, 2 or 5 times a power of ten, so that the axis labels are round; for
    // bytes, in the binary unit the labels use (5 MiB/s, not 4.8 MiB/s).
    function niceCeiling(value, base = 10) {
        let unit = 1;
        while (unit * base <= value) unit *= base;
        const scaled = value / unit;
        const power = 10 ** Math.floor(Math.log10(scaled));
        const step = [1, 2, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= scaled);
        return unit * Math.min(base, step);
    }

    // The server's clock, learnt from the updates, places the buckets: the
    // browser's clock may be minutes off.
    function serverNow() { return Date.now() / 1000 + state.clockOffset; }

    /* ---------- live updates ---------- */

    function setConnection(connection) {
        document.body.dataset.connection = connection;
        const words = {connecting: 'connecting…', live: 'live', disconnected: 'disconnected: reconnecting…'};
        document.getElementById('connection-text').textContent = words[connection];
    }

    function connect() {
        state.source?.close();
        state.source = new EventSource(apiUrl('live'));
        state.lastEventAt = Date.now();
        state.source.addEventListener('update', onUpdate);
        state.source.addEventListener('error', () => setConnection('disconnected'));
    }

    function replaceStalledStream() {
        if (Date.now() - state.lastEventAt > STALE_AFTER_MS) {
            setConnection('disconnected');
            connect();
        }
    }

    function onUpdate(event) {
        let update;
        try {
            update = JSON.parse(event.data);
        } catch {
            setError('live', 'an update that is not JSON');
            return;
        }
        state.lastEventAt = Date.now();
        setConnection('live');
        if (isNumber(update.time)) state.clockOffset = update.time - Date.now() / 1000;
        if (update.summary && updateSummary(update.summary)) refreshSlowReports();
        if (Array.isArray(update.in_progress)) renderTable('in-progress', update.in_progress);
        if (update.metrics) {
            renderMetrics(update.metrics);
            recordBandwidth(update.time, update.metrics);
            renderBandwidth();
        }
        // Counted last, so that whoever waits for the count sees the update drawn.
        state.updates += 1;
        document.body.dataset.updates = String(state.updates);
    }

    /* ---------- loading ---------- */

    // One refresh at a time: the requests that arrive while one runs fold into
    // a single follow-up, so a burst of new downloads costs two rounds, not one
    // per update.
    function refreshSlowReports() {
        if (state.refreshing) {
            state.refreshAgain = true;
        } else {
            state.refreshing = loadSlowReports().finally(afterRefresh);
        }
        return state.refreshing;
    }

    function loadSlowReports() {
        return Promise.all([
            load('summary', {}, (rows) => updateSummary(rows[0] ?? {})),
            load('files', {}, (rows) => renderTable('files', rows)),
            load('countries', {}, (rows) => renderTable('countries', rows)),
            load('reasons', {}, (rows) => renderTable('reasons', rows)),
            load('timeseries', TIMESERIES_QUERY, renderTimeseries),
        ]);
    }

    function afterRefresh() {
        state.refreshing = null;
        if (state.refreshAgain) {
            state.refreshAgain = false;
            refreshSlowReports();
        }
    }

    // The stream starts once the reports have answered, so that no answer
    // older than an update can overwrite it.
    async function start() {
        // Empty axes until the first answers, rather than blank panels.
        renderTimeseries([]);
        renderBandwidth();
        await Promise.all([
            load('summary', {}, (rows) => updateSummary(rows[0] ?? {})),
            load('in_progress', {}, (rows) => renderTable('in-progress', rows)),
            refreshSlowReports(),
        ]);
        document.body.dataset.loaded = '1';
        connect();
        setInterval(refreshSlowReports, SLOW_REFRESH_MS);
        setInterval(replaceStalledStream, 1000);
    }

    start();
})();
