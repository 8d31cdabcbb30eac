// Lintel manager UI: progressive enhancement only; every page works without it.
// Filter selects/checkboxes marked data-autosubmit submit their form on change
// (the Apply button stays for keyboard users and no-JS browsers).
document.addEventListener("change", function (event) {
  var el = event.target;
  if (el && el.hasAttribute && el.hasAttribute("data-autosubmit") && el.form) {
    el.form.submit();
  }
});
