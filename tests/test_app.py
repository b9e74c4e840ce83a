"""The local web app (ciaosr/app.py): its session, its queue, and the page in a headless Chromium
checked against the CLI's output.

The browser test needs the app extra (ciaosr[app]), Playwright (pip) and Debian's `chromium`;
Playwright is pointed at the system Chromium (no browser download). It is skipped, saying why, when Chromium
or Playwright is missing; the queue test is skipped when Gradio is.
"""
import http.client
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from ciaosr import app, pipeline
from ciaosr import cli as shared_cli
from ciaosr import upscale as cli
from ciaosr_arch.errors import byte_size

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
BROKEN = b'this is not an image\n' * 8
LOCAL = ('http://127.0.0.1', 'data:', 'blob:')


def make_photos(folder):
    """Two small photos (a 24x20 PNG gradient and a 24x20 JPEG of it) and a broken .png, in `folder`."""
    folder.mkdir()
    rows, cols = np.mgrid[0:20, 0:24]
    rgb = np.stack([rows * 12, cols * 10, (rows + cols) * 5], -1).astype(np.uint8)
    Image.fromarray(rgb).save(folder / 'gradient.png')
    Image.fromarray(rgb[::-1, ::-1]).save(folder / 'photo.jpg', quality=95)
    (folder / 'broken.png').write_bytes(BROKEN)
    return [folder / 'gradient.png', folder / 'photo.jpg', folder / 'broken.png']


def free_port():
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def wait_for_port(port, process, seconds):
    """Return when 127.0.0.1:port accepts connections; fail if the app exits or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f'the app exited with status {process.returncode}:\n{process.stdout.read()}')
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f'the app did not listen on port {port} within {seconds} s')


def test_session_reports_progress_and_time_left(tmp_path, tiny_model):
    """The session behind the page: per-photo progress with the time left, 'long side', failures in one line."""
    photos = make_photos(tmp_path / 'in')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    reports = []
    options = app.Options('long side', 48, str(tiny_model.resolve()), 'fp32', '2.5GB')
    outcome = session.run([photos[2], photos[0], photos[1]], options, lambda *report: reports.append(report))
    assert reports[0] == (0.0, 'broken.png (1 of 3)') and reports[1] == (1 / 3, 'gradient.png (2 of 3)')
    third = next(report for report in reports if report[1].startswith('photo.jpg'))  # then reports within it
    assert third[0] == 2 / 3 and re.fullmatch(r'photo\.jpg \(3 of 3\) - about \d+ s left', third[1])
    assert [fraction for fraction, _ in reports] == sorted(fraction for fraction, _ in reports)
    assert outcome.lines[0] == cli.cpu_path_line(session.network(options.model).runtime.name, None)
    assert outcome.lines[1] == 'FAILED broken.png: not a readable image (unknown or broken format)'
    assert outcome.lines[-1].startswith('2 done, 1 failed')
    assert [Image.open(dst).size for _, _, dst in outcome.outputs] == [(48, 40), (48, 40)]
    assert outcome.archive.parent == outcome.folder and outcome.folder.parent == (tmp_path / 'out').resolve()
    with zipfile.ZipFile(outcome.archive) as archive:
        assert archive.namelist() == ['gradient_out.png', 'photo_out.jpg']
    (tmp_path / 'other').mkdir()  # two uploads with the same name: the second is refused, not overwritten
    twin = shutil.copy(photos[0], tmp_path / 'other' / 'gradient.png')
    outcome = session.run([photos[0], twin], app.Options('scale', 2, options.model, 'fp32', '2.5GB'))
    assert outcome.lines[2] == ('FAILED gradient.png: its output gradient_out.png is also the output of another '
                                'photo named gradient.png; rename one of them')
    for scale in (0.5, 1):  # the CLI's --scale check: x1 is refused too, before any photo is touched
        with pytest.raises(cli.UsageError, match=f'^the scale must be a finite number > 1, got {scale}'):
            session.run(photos, app.Options('scale', scale, 'default', 'fp32', '2.5GB'))


def test_stop_ends_the_run_at_its_next_chunk_and_keeps_what_is_done(tmp_path, tiny_model):
    """The page's Stop: the photo in progress is not written, the photos done stay, the rest are not started, each
    named in the log; a run asked for before the Stop and still waiting is stopped before its first photo; a Stop
    pressed between runs does not touch the next one."""
    photos = make_photos(tmp_path / 'in')[:2]
    photos.append(shutil.copy(photos[0], tmp_path / 'in' / 'third.png'))
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    options = app.Options('scale', 2, str(tiny_model.resolve()), 'fp32', '2.5GB')
    session.stop()  # pressed while nothing runs
    outcome = session.run(photos, options, lambda _, text: text.startswith('photo.jpg') and session.stop())
    assert outcome.lines[1].startswith('gradient.png -> gradient_out.png: 24x20 -> 48x40 in ')
    assert outcome.lines[2:4] == ['STOPPED photo.jpg: not saved', 'not started: third.png']
    assert outcome.lines[4].startswith('1 done, 0 failed, 2 stopped, ') and outcome.archive is None
    assert sorted(path.name for path in outcome.folder.iterdir()) == ['gradient_out.png']
    outcome = session.run(photos[:1], options, lambda *_: session.stop())  # stopped before its first chunk ends
    assert outcome.lines[1:] == ['STOPPED gradient.png: not saved', '0 done, 0 failed, 1 stopped; nothing was saved']
    waiting = session.request()  # asked for (queued behind the running job) before the Stop
    session.stop()
    outcome = session.run(photos, options, number=waiting)
    assert outcome.lines[1:] == ['not started: gradient.png, photo.jpg, third.png',
                                 '0 done, 0 failed, 3 stopped; nothing was saved']
    assert outcome.folder is None and session.run(photos[:1], options).lines[-1].startswith('1 done, 0 failed, ')


def test_session_offers_int8_where_openvino_runs_it(tmp_path, tiny_model, monkeypatch):
    """On a CPU with OpenVINO and VNNI the page offers the CLI's int8 decode, and a run with it gives the CLI's
    files; without OpenVINO, or on a CPU without VNNI, it is not offered, and asking for it anyway is refused before
    any photo is touched."""
    from ciaosr_arch.runtime import openvino_version
    monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: 'avx512-bf16')
    photos = make_photos(tmp_path / 'in')[:1]
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    options = app.Options('scale', 2, str(tiny_model.resolve()), 'int8', '2.5GB')
    if openvino_version() is not None:
        assert session.precisions()[-1] == 'int8'
        outcome = session.run(photos, options)
        assert outcome.lines[-1].startswith('1 done') and session.network(options.model, True).runtime.int8
        assert [Image.open(dst).size for _, _, dst in outcome.outputs] == [(48, 40)]
        monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: 'avx2')
        assert 'int8' not in session.precisions()
        with pytest.raises(cli.UsageError, match='int8 is not supported on this device'):
            session.run(photos, options)
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: None)
    monkeypatch.setattr(app, 'openvino_version', lambda: None)
    assert 'int8' not in session.precisions()
    with pytest.raises(cli.UsageError, match='int8 is not supported on this device'):
        session.run(photos, options)


def test_one_job_at_a_time(tmp_path, monkeypatch):
    """Upscaling runs through Gradio's queue with a concurrency limit of 1, Stop outside it; analytics are off."""
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))  # importing Gradio makes a folder there
    pytest.importorskip('gradio', reason='the app extra is not installed (pip install "ciaosr[app]")')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0))
    demo = app.build_app(session)
    [upscale] = [fn for fn in demo.fns.values() if fn.name == 'upscale']
    assert upscale.queue and upscale.concurrency_limit == 1
    # the run's number is taken at the click and Stop is pressed beside the queue, so both reach a waiting job
    [request] = [fn for fn in demo.fns.values() if fn.name == 'request']
    [stop] = [fn for fn in demo.fns.values() if fn.name == 'stop']
    assert not request.queue and not stop.queue
    waiting = request.fn()
    stop.fn()
    assert waiting <= session.stopped_through < request.fn()
    assert demo.config['analytics_enabled'] is False


def test_browser_upload_scale_compare_download(tmp_path, tiny_model, capsys):
    """In Chromium: upload two photos and a broken file, set x2.5, run, download. The files are the CLI's output
    for the same inputs, the broken file gets the CLI's message, the comparison shows the result at 1:1, the page
    fetches nothing from the network, the app makes no outbound connection and writes nothing outside --output."""
    sync_api = pytest.importorskip('playwright.sync_api', reason='Playwright is not installed (pip install playwright)')
    if CHROMIUM is None:
        pytest.skip('Chromium is not installed (apt-get install chromium)')
    photos = make_photos(tmp_path / 'in')
    out, cwd, home, saved = tmp_path / 'out', tmp_path / 'cwd', tmp_path / 'home', tmp_path / 'downloads'
    for folder in (cwd, home, saved):
        folder.mkdir()
    trap = socket.socket()  # a proxy that nothing may connect to: the app's outbound HTTP would come here
    trap.bind(('127.0.0.1', 0))
    trap.listen()
    proxy = f'http://127.0.0.1:{trap.getsockname()[1]}'
    env = dict(os.environ, HOME=str(home), OMP_NUM_THREADS='1', NO_PROXY='127.0.0.1,localhost',
               no_proxy='127.0.0.1,localhost',
               **{name: proxy for name in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy',
                                           'all_proxy')})
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / 'inference' / 'app.py'), '--output', str(out),
                                '--model', str(tiny_model), '--device', 'cpu', '--port', str(port), '--no-browser'],
                               cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    external = []

    def guard(route):
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    try:
        wait_for_port(port, process, 90)  # Gradio starts in 20-45 s on a loaded 2-core machine
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox'])
            page = browser.new_page(viewport={'width': 1400, 'height': 1000}, accept_downloads=True)
            page.route('**/*', guard)
            page.goto(f'http://127.0.0.1:{port}/')
            page.locator('#photos input[type=file]').set_input_files([str(p) for p in photos])
            sync_api.expect(page.locator('#photos a[href*="file="]')).to_have_count(3, timeout=15_000)  # uploaded
            page.locator('#scale input').fill('2.5')
            page.locator('#run').click()
            log = page.locator('#log textarea')
            sync_api.expect(log).to_have_value(re.compile('2 done, 1 failed'), timeout=30_000)
            links = page.locator('#downloads a[download]')
            sync_api.expect(links).to_have_count(3)
            for index in range(3):
                with page.expect_download() as download:
                    links.nth(index).click()
                download.value.save_as(saved / download.value.suggested_filename)
            images = page.locator('#slider img, #detail img')
            sync_api.expect(images).to_have_count(4)
            page.wait_for_function('() => [...document.querySelectorAll("#slider img, #detail img")]'
                                   '.every(i => i.complete && i.naturalWidth > 0)', timeout=15_000)  # decoded
            sizes = images.evaluate_all('all => all.map(i => [i.naturalWidth, i.naturalHeight])')
            shown = images.evaluate_all('all => all.map(i => i.src)')
            assert all(re.search(r'/\.app-cache-\w+/views/\w{64}\.png$', src) for src in shown)  # served, not copied
            page.locator('#compare input').click()  # the other photo: its views replace the first one's
            page.get_by_role('option', name='photo.jpg').click()
            page.wait_for_function(f'() => [...document.querySelectorAll("#slider img, #detail img")]'
                                   f'.every((i, k) => i.complete && i.naturalWidth > 0 && i.src != {shown}[k])',
                                   timeout=15_000)
            page.screenshot(path=str(tmp_path / 'app.png'), full_page=True)
            text = log.input_value()
            browser.close()
    finally:
        process.terminate()  # the app stops as on Ctrl-C and removes its cache folder
        try:
            server_output = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, server_output
    assert f'serving on http://127.0.0.1:{port}/ (this machine only' in server_output
    assert 'share=True' not in server_output  # Gradio's advice to make a public link, quieted
    assert external == []
    assert select.select([trap], [], [], 0)[0] == [], 'the app tried to reach the network'
    trap.close()
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == [], 'the app wrote outside --output'
    [run] = out.iterdir()  # one run folder; the cache folder is gone
    assert sizes == [[60, 50]] * 4  # x2.5 of 24x20: the fitted view and the 1:1 detail (smaller than its box)

    assert cli.main(['-i', str(photos[0].parent), '-o', str(tmp_path / 'cli'), '-s', '2.5',
                     '--model', str(tiny_model)]) == 1  # the broken file fails
    cli_message = re.search(r'FAILED .*broken\.png: (.*)', capsys.readouterr().err)[1]
    assert f'FAILED broken.png: {cli_message}' in text.splitlines()
    expected = {name: (tmp_path / 'cli' / name).read_bytes() for name in ('gradient_out.png', 'photo_out.jpg')}
    assert sorted(path.name for path in saved.iterdir()) == [f'ciaosr_{run.name}.zip', *expected]
    for name, data in expected.items():
        assert (saved / name).read_bytes() == data == (run / name).read_bytes()
        assert Image.open(saved / name).size == (60, 50)
    with zipfile.ZipFile(saved / f'ciaosr_{run.name}.zip') as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == expected


def test_port_in_use_is_one_line(tmp_path, capsys):
    """--port taken: one line naming the port and --port, exit status 2, before anything is loaded or written."""
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert app.main(['-o', str(tmp_path / 'out'), '--port', str(port), '--no-browser']) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: port {port} on 127.0.0.1 is not free') and '--port' in err[0]
    assert not (tmp_path / 'out').exists()


def test_a_run_that_writes_nothing_leaves_no_run_folder(tmp_path):
    photos = make_photos(tmp_path / 'in')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0))
    outcome = session.run([photos[2]], app.Options('scale', 2, 'default', 'fp32', '2.5GB'))
    assert outcome.folder is None and outcome.lines[-1] == '0 done, 1 failed; nothing was saved'
    assert list((tmp_path / 'out').iterdir()) == []


def test_budget_above_the_machine_memory_warns(tmp_path, tiny_model):
    """The CLI's warning (ciaosr.cli.memory_warning) is the first line of the page's log; it and the refusal name the
    page's field, not the CLI's --max-memory (they did)."""
    assert shared_cli.memory_warning(2 ** 20, torch.device('cpu')) is None
    budget = pipeline.device_memory(torch.device('cpu')) * 2
    photos = make_photos(tmp_path / 'in')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    outcome = session.run(photos[:1], app.Options('scale', 2, str(tiny_model.resolve()), 'fp32', str(budget)))
    assert outcome.lines[0].startswith(f'warning: the memory budget {byte_size(budget)} is more than this machine')
    assert outcome.lines[-1].startswith('1 done')
    with pytest.raises(cli.UsageError, match=r'^the memory budget 1 KiB leaves no room for a picture: .*; raise it$'):
        session.run(photos[:1], app.Options('scale', 2, str(tiny_model.resolve()), 'fp32', '1KB'))
    assert len(list((tmp_path / 'out').iterdir())) == 1  # the first run's folder only


def test_comparison_reads_outputs_over_the_bomb_limit_and_never_hides_the_run(tmp_path, tiny_model, monkeypatch):
    """The before/after views of an output over PIL's decompression-bomb limit (made 1000 pixels here) come from
    the app's own reader; when the views cannot be made, the run's log and downloads still come, with one line."""
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))
    gr = pytest.importorskip('gradio', reason='the app extra is not installed (pip install "ciaosr[app]")')
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)  # the 24x20 input passes, its 48x40 output does not
    photos = make_photos(tmp_path / 'in')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    [upscale] = [fn.fn for fn in app.build_app(session).fns.values() if fn.name == 'upscale']
    model = str(tiny_model.resolve())
    log, downloads, _, state, fitted, zoomed = upscale([str(photos[0])], 'scale', 2, 3840, model, 'fp32', '2.5GB',
                                                       50, 50, session.request(), progress=lambda *args, **kwargs: None)
    assert log.splitlines()[-1].startswith('1 done') and len(downloads) == 1
    assert all(Path(view).parent == tmp_path / 'gradio' / 'views' for view in fitted + zoomed)
    assert [cv2.imread(view, cv2.IMREAD_UNCHANGED).shape for view in fitted + zoomed] == [(40, 48, 3)] * 4
    def out_of_memory(path):
        raise MemoryError('Unable to allocate 25.2 GiB for an array')

    monkeypatch.setattr(app, 'read_own_output', out_of_memory)
    shutil.copy(photos[0], tmp_path / 'in' / 'copy.png')  # a new pair (display_pair caches the last two)
    log, downloads, _, state, fitted, zoomed = upscale([str(tmp_path / 'in' / 'copy.png')], 'scale', 2, 3840, model,
                                                       'fp32', '2.5GB', 50, 50, session.request(),
                                                       progress=lambda *args, **kwargs: None)
    assert log.splitlines()[-1].startswith('no comparison for copy.png: ') and len(downloads) == 1
    assert fitted is None and zoomed is None
    [compare] = [fn.fn for fn in app.build_app(session).fns.values() if fn.name == 'compare']
    with pytest.raises(gr.Error, match='no comparison for copy.png: Unable to allocate') as error:
        compare('copy.png', 50, 50, state)
    assert not error.value.print_exception  # shown on the page; Gradio printed a traceback on the terminal too
    for files, memory, message in [([], '2.5GB', 'Drop one or more photos first.'),
                                   ([str(photos[0])], 'lots', 'the memory budget must be a size')]:
        with pytest.raises(gr.Error, match=message) as error:
            upscale(files, 'scale', 2, 3840, model, 'fp32', memory, 50, 50, session.request(),
                    progress=lambda *args, **kwargs: None)
        assert not error.value.print_exception


def test_a_view_is_written_once_and_exactly(tmp_path):
    """The same view sent again is the same file, not rewritten (a page may be fetching it) but touched (Gradio
    deletes its temporary files by age); RGB and RGBA round-trip exactly."""
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    first = Path(app.view_file(rgba, tmp_path / 'views'))
    assert (cv2.cvtColor(cv2.imread(str(first), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA) == rgba).all()
    first.write_bytes(b'marker')  # a rewrite, in place or not, would replace it
    os.utime(first, (0, 0))  # as if written long ago
    assert app.view_file(rgba.copy(), tmp_path / 'views') == str(first) and first.read_bytes() == b'marker'
    assert time.time() - first.stat().st_mtime < 60
    rgb = Path(app.view_file(rgba[..., :3], tmp_path / 'views'))
    assert rgb != first and (cv2.imread(str(rgb))[..., ::-1] == rgba[..., :3]).all()
    assert sorted((tmp_path / 'views').iterdir()) == sorted([first, rgb])


def test_views_follow_the_detail_sliders_and_the_users_choice(tmp_path, tiny_model, monkeypatch):
    """Upscale shows the first output's 1:1 detail where the x/y sliders point; releasing a slider re-makes the
    detail only; the Compare list re-makes the views on the user's choice only (upscale sets it and its views)."""
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))
    pytest.importorskip('gradio', reason='the app extra is not installed (pip install "ciaosr[app]")')
    monkeypatch.setattr(app, 'DETAIL_SIDE', 8)
    photos = make_photos(tmp_path / 'in')
    session = app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    demo = app.build_app(session)
    functions = {fn.name: fn for fn in demo.fns.values()}
    _, _, _, state, fitted, zoomed = functions['upscale'].fn(
        [str(photos[0])], 'scale', 2, 3840, str(tiny_model.resolve()), 'fp32', '2.5GB', 0, 100, session.request(),
        progress=lambda *args, **kwargs: None)
    [name] = state
    before, after = app.display_pair(*state[name])  # 40 x 48

    def read(path):
        return cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)

    assert (read(fitted[0]) == before).all() and (read(fitted[1]) == after).all()
    assert (read(zoomed[0]) == before[-8:, :8]).all() and (read(zoomed[1]) == after[-8:, :8]).all()  # x 0, y 100 %
    detail = functions['zoom'].fn(name, 100, 0, state)
    assert (read(detail[0]) == before[:8, -8:]).all() and (read(detail[1]) == after[:8, -8:]).all()
    [choice] = [block for block in demo.blocks.values() if getattr(block, 'elem_id', None) == 'compare']
    assert functions['compare'].targets == [(choice._id, 'input')]


def request(port, method, path, headers=(), body=b''):
    """(status, headers, body) of one HTTP request to 127.0.0.1:port with exactly these headers."""
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders(body or None)
    response = connection.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    connection.close()
    return result


def multipart(name, data):
    """(Content-Type header, body) of a form upload of one file `name` as Gradio's page sends it."""
    body = (b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="' + name.encode() + b'"\r\n'
            b'Content-Type: application/octet-stream\r\n\r\n' + data + b'\r\n--xyz--\r\n')
    return 'multipart/form-data; boundary=xyz', body


def test_only_the_apps_own_page_is_answered(tmp_path, monkeypatch):
    """Served in this process on a free loopback port: requests with another Host (DNS rebinding) or another
    Origin (a page elsewhere posting through the browser) are refused without CORS headers; uploads that are not
    images, or too large, are refused before they are stored; only files in the app's own folder are served."""
    cache = tmp_path / 'cache'
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(cache))
    pytest.importorskip('gradio', reason='the app extra is not installed (pip install "ciaosr[app]")')
    (tmp_path / 'out').mkdir()
    secret = tmp_path / 'out' / '.secret'
    secret.write_text('private')
    port = free_port()
    demo = app.serve(app.AppSession(tmp_path / 'out', cli.pick_device('cpu', 0)), port, block=False)
    own, evil = f'127.0.0.1:{port}', f'evil.example:{port}'
    png = (ROOT / 'docs' / 'app.png').read_bytes()
    try:
        for host in (own, f'localhost:{port}'):
            assert request(port, 'GET', '/', [('Host', host)])[0] == 200
        for headers in ([('Host', evil)], [('Host', own), ('Origin', f'http://{evil}')],
                        [('Host', evil), ('Origin', f'http://{evil}')], [('Host', own), ('Origin', 'null')]):
            kind, body = multipart('photo.png', png)
            status, answer, _ = request(port, 'POST', '/gradio_api/upload', headers + [
                ('Content-Type', kind), ('Content-Length', str(len(body)))], body)
            assert status == 403 and not any(key.lower().startswith('access-control') for key in answer)
        assert not cache.exists() or not list(cache.rglob('photo.png'))
        kind, body = multipart('big.bin', b'\0' * 100_000)
        headers = [('Host', own), ('Origin', f'http://{own}'), ('Content-Type', kind)]
        assert request(port, 'POST', '/gradio_api/upload', headers + [('Content-Length', str(len(body)))],
                       body)[0] == 400
        assert request(port, 'POST', '/gradio_api/upload', headers + [
            ('Content-Length', str(app.UPLOAD_LIMIT + 1))])[0] == 413
        assert not list(cache.rglob('*.bin')) and not [p for p in cache.rglob('tmp*') if p.is_file()]
        kind, body = multipart('photo.png', png)
        status, _, stored = request(port, 'POST', '/gradio_api/upload', headers[:2] + [
            ('Content-Type', kind), ('Content-Length', str(len(body)))], body)
        [path] = json.loads(stored)
        assert status == 200 and Path(path).is_relative_to(cache.resolve())
        assert request(port, 'GET', f'/gradio_api/file={path}', [('Host', own)])[2] == png
        assert request(port, 'GET', f'/gradio_api/file={secret}', [('Host', own)])[0] == 403
    finally:
        demo.close()


def test_a_port_whose_last_connections_wait_in_time_wait_is_free():
    """After Ctrl-C, starting the app again on the same --port was refused for about a minute: the probe bound without
    SO_REUSEADDR, which the server itself (uvicorn) sets, so the stopped server's closed connections held the port."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's (Linux keeps it in TIME_WAIT)
        server.bind((app.HOST, 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection((app.HOST, port)) as client:
            connection, _ = server.accept()
            connection.close()  # the server's side closes first: its end of the connection waits in TIME_WAIT
            client.recv(1)
    app.check_port(port)


def test_a_model_file_that_cannot_be_used_stops_the_start(tmp_path, capsys):
    """`--model README.md` started the server and failed at the first photo; it is read at the start now: one line,
    exit status 1, nothing written."""
    junk = tmp_path / 'notes.pth'
    junk.write_text('not a model')
    assert app.main(['-o', str(tmp_path / 'out'), '--model', str(junk), '--no-browser']) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f'error: {junk}: ') and not (tmp_path / 'out').exists()
