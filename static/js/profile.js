// The profile page right after a token is created (templates/marketdata/profile.html loads this only then).
// A static file, not an inline script: the Content-Security-Policy allows scripts from our origin only.
const input = document.getElementById("new-token");
const button = document.getElementById("copy-token");
if (input && button) {
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      // No clipboard API outside a secure context: copy the selection instead.
      input.select();
      document.execCommand("copy");
    }
    button.textContent = "Copied";
  });
  input.addEventListener("focus", () => input.select());
  // This page answers a POST. Make its history entry a plain GET, so a reload neither
  // submits the form again (a second token) nor shows this token again.
  history.replaceState(null, "", location.href);
}
