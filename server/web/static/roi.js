// Region of interest on a camera's snapshot: drag a rectangle on the canvas over the
// picture; it writes "x1,y1,x2,y2" (fractions 0..1 of the frame) into the camera form's
// region field, which stays editable by hand (and is what the server checks).
(function () {
  'use strict';
  var MIN = 0.05; // the server refuses a region under 5% of the frame each way

  function clamp(v) { return Math.min(1, Math.max(0, v)); }

  function parse(text) {
    var parts = String(text || '').split(',').map(function (s) { return Number(s.trim()); });
    if (parts.length !== 4 || parts.some(function (v) { return !(v >= 0 && v <= 1); })) {
      return null;
    }
    return parts;
  }

  function setup(canvas) {
    var input = document.getElementById(canvas.dataset.for);
    if (!input) { return; }
    var box = canvas.parentElement;
    var ctx = canvas.getContext('2d');
    var start = null;
    var rect = parse(input.value);

    function draw() {
      var w = canvas.width, h = canvas.height;
      ctx.clearRect(0, 0, w, h);
      if (!rect) { return; }
      var x = rect[0] * w, y = rect[1] * h, rw = (rect[2] - rect[0]) * w, rh = (rect[3] - rect[1]) * h;
      ctx.fillStyle = 'rgba(0, 0, 0, 0.45)';  // what is left out is dimmed
      ctx.fillRect(0, 0, w, h);
      ctx.clearRect(x, y, rw, rh);
      ctx.strokeStyle = '#f5b700';
      ctx.lineWidth = 2;
      ctx.strokeRect(x + 1, y + 1, Math.max(0, rw - 2), Math.max(0, rh - 2));
    }

    function size() {
      canvas.width = box.clientWidth;
      canvas.height = box.clientHeight;
      draw();
    }

    function at(event) {
      var r = canvas.getBoundingClientRect();
      return [clamp((event.clientX - r.left) / r.width), clamp((event.clientY - r.top) / r.height)];
    }

    canvas.addEventListener('pointerdown', function (event) {
      start = at(event);
      canvas.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    canvas.addEventListener('pointermove', function (event) {
      if (!start) { return; }
      var p = at(event);
      rect = [Math.min(start[0], p[0]), Math.min(start[1], p[1]),
              Math.max(start[0], p[0]), Math.max(start[1], p[1])];
      draw();
    });
    function finish(event) {
      if (canvas.hasPointerCapture(event.pointerId)) { canvas.releasePointerCapture(event.pointerId); }
      if (!start) { return; }
      start = null;
      if (rect && (rect[2] - rect[0] < MIN || rect[3] - rect[1] < MIN)) {
        rect = parse(input.value);  // a click or a sliver: keep what was there
      } else if (rect) {
        input.value = rect.map(function (v) { return v.toFixed(3); }).join(',');
      }
      draw();
    }
    canvas.addEventListener('pointerup', finish);
    canvas.addEventListener('pointercancel', finish);
    input.addEventListener('input', function () { rect = parse(input.value); draw(); });
    window.addEventListener('resize', size);
    var img = box.querySelector('img');
    if (img && !img.complete) { img.addEventListener('load', size); }
    size();
  }

  document.addEventListener('DOMContentLoaded', function () {
    document.querySelectorAll('canvas.roi').forEach(setup);
  });
}());
