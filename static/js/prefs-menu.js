// The display settings in the top bar (templates/_prefs.html): theme (auto / light / dark) and
// whether changed values flash. prefs.js (loaded in <head>) applies and remembers them; this only
// wires the controls, and closes the panel on Escape or a click elsewhere.

function boot() {
  const prefs = window.livefolioPrefs;
  const menu = document.querySelector(".prefs");
  if (!prefs || !menu) return;
  const radios = [...menu.querySelectorAll('input[name="livefolio-theme"]')];
  const flash = menu.querySelector('input[name="livefolio-flash"]');

  function sync() {
    const choice = prefs.themeChoice();
    for (const radio of radios) radio.checked = radio.value === choice;
    flash.checked = prefs.flashChoice() === "on";
  }

  for (const radio of radios) radio.addEventListener("change", () => radio.checked && prefs.setTheme(radio.value));
  flash.addEventListener("change", () => prefs.setFlash(flash.checked ? "on" : "off"));
  // Another tab, or the OS: prefs.js has applied it; the controls follow.
  document.addEventListener("livefolio:themechange", sync);
  window.addEventListener("storage", sync);

  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
  sync();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot, { once: true });
else boot();
