"""The local web app (ciaosr/app.py): its engine, its queue, and the page in a headless Chromium
checked against the CLI's output.

The browser test needs the app extra (ciaosr[app]), Playwright (pip) and Debian's `chromium`;
Playwright is pointed at the system Chromium (no browser download). It is skipped, saying why, when Chromium
or Playwright is missing; the queue test is skipped when Gradio is.
"""
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

import numpy as np
import pytest
from PIL import Image

from ciaosr import app
from ciaosr import upscale as cli

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


def test_engine_reports_progress_and_time_left(tmp_path, tiny_model):
    """The engine behind the page: per-photo progress with the time left, 'long side', failures in one line."""
    photos = make_photos(tmp_path / 'in')
    engine = app.Engine(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    reports = []
    options = app.Options('long side', 48, str(tiny_model.resolve()), 'fp32', '2.5GB')
    outcome = engine.run([photos[2], photos[0], photos[1]], options, lambda *report: reports.append(report))
    assert reports[0] == (0.0, 'broken.png (1 of 3)') and reports[1] == (1 / 3, 'gradient.png (2 of 3)')
    third = next(report for report in reports if report[1].startswith('photo.jpg'))  # then reports within it
    assert third[0] == 2 / 3 and re.fullmatch(r'photo\.jpg \(3 of 3\) - about \d+ s left', third[1])
    assert [fraction for fraction, _ in reports] == sorted(fraction for fraction, _ in reports)
    assert outcome.lines[0] == cli.cpu_path_line('openvino' if engine.network(options.model).runtime else 'torch', None)
    assert outcome.lines[1] == 'FAILED broken.png: not a readable image (unknown or broken format)'
    assert outcome.lines[-1].startswith('2 done, 1 failed')
    assert [Image.open(dst).size for _, _, dst in outcome.outputs] == [(48, 40), (48, 40)]
    assert outcome.archive.parent == outcome.folder and outcome.folder.parent == (tmp_path / 'out').resolve()
    with zipfile.ZipFile(outcome.archive) as archive:
        assert archive.namelist() == ['gradient_out.png', 'photo_out.jpg']
    (tmp_path / 'other').mkdir()  # two uploads with the same name: the second is refused, not overwritten
    twin = shutil.copy(photos[0], tmp_path / 'other' / 'gradient.png')
    outcome = engine.run([photos[0], twin], app.Options('scale', 2, options.model, 'fp32', '2.5GB'))
    assert outcome.lines[2] == ('FAILED gradient.png: its output gradient_out.png is also the output of another '
                                'photo named gradient.png; rename one of them')
    with pytest.raises(cli.UsageError, match='scale must be a number >= 1'):
        engine.run(photos, app.Options('scale', 0.5, 'default', 'fp32', '2.5GB'))


def test_engine_offers_int8_where_openvino_runs_it(tmp_path, tiny_model, monkeypatch):
    """On a CPU with OpenVINO and VNNI the page offers the CLI's int8 decode, and a run with it gives the CLI's
    files; without OpenVINO, or on a CPU without VNNI, it is not offered, and asking for it anyway is refused before
    any photo is touched."""
    from ciaosr_arch.runtime import openvino_version
    monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: 'avx512-bf16')
    photos = make_photos(tmp_path / 'in')[:1]
    engine = app.Engine(tmp_path / 'out', cli.pick_device('cpu', 0), [str(tiny_model)])
    options = app.Options('scale', 2, str(tiny_model.resolve()), 'int8', '2.5GB')
    if openvino_version() is not None:
        assert engine.precisions()[-1] == 'int8'
        outcome = engine.run(photos, options)
        assert outcome.lines[-1].startswith('1 done') and engine.network(options.model, True).runtime.int8
        assert [Image.open(dst).size for _, _, dst in outcome.outputs] == [(48, 40)]
        monkeypatch.setattr('ciaosr_arch.runtime.cpu_kind', lambda flags=None: 'avx2')
        assert 'int8' not in engine.precisions()
        with pytest.raises(cli.UsageError, match='int8 is not supported on this device'):
            engine.run(photos, options)
    monkeypatch.setattr('ciaosr_arch.runtime.openvino_version', lambda: None)
    monkeypatch.setattr(app, 'openvino_version', lambda: None)
    assert 'int8' not in engine.precisions()
    with pytest.raises(cli.UsageError, match='int8 is not supported on this device'):
        engine.run(photos, options)


def test_one_job_at_a_time(tmp_path, monkeypatch):
    """Upscaling runs through Gradio's queue with a concurrency limit of 1; analytics are off."""
    monkeypatch.setenv('GRADIO_TEMP_DIR', str(tmp_path / 'gradio'))  # importing Gradio makes a folder there
    pytest.importorskip('gradio', reason='the app extra is not installed (pip install "ciaosr[app]")')
    demo = app.build_app(app.Engine(tmp_path / 'out', cli.pick_device('cpu', 0)))
    [upscale] = [fn for fn in demo.fns.values() if fn.name == 'upscale']
    assert upscale.queue and upscale.concurrency_limit == 1
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
        wait_for_port(port, process, 45)
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
