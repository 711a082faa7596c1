// The display settings every page applies before its first paint: the theme and whether changed
// values flash. A classic script loaded (blocking) from <head> in base.html: the Content-Security-Policy
// allows no inline script, and a module would run after the first paint (a flash of the wrong theme).
//
// On <html>:
//   data-theme          "light" | "dark": what the CSS draws (:root[data-theme="dark"] in app.css)
//   data-theme-choice   "auto" | "light" | "dark": what the user picked ("auto" follows prefers-color-scheme)
//   data-flash          "on" | "off": whether changed values flash (off also under prefers-reduced-motion, in CSS)
// Both choices live in localStorage ("livefolio.theme", "livefolio.flash"). When the drawn theme changes
// (a choice, the OS switching, another tab), `livefolio:themechange` is dispatched on `document`: charts
// read their colours from the CSS custom properties (--chart-up, --chart-down, --chart-grid, --chart-text,
// --chart-line) again on it. The header's control (prefs-menu.js) calls window.livefolioPrefs.
(function () {
  "use strict";
  var THEME_KEY = "livefolio.theme";
  var FLASH_KEY = "livefolio.flash";
  var THEMES = ["auto", "light", "dark"];
  var root = document.documentElement;
  var media = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  var lessMotion = window.matchMedia ? window.matchMedia("(prefers-reduced-motion: reduce)") : null;

  function read(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (err) {
      return null; // storage disabled: the defaults, nothing remembered
    }
  }

  function write(key, value) {
    try {
      window.localStorage.setItem(key, value);
    } catch (err) {
      /* storage disabled or full: the choice holds for this page only */
    }
  }

  function themeChoice() {
    var value = read(THEME_KEY);
    return THEMES.indexOf(value) >= 0 ? value : "auto";
  }

  function flashChoice() {
    return read(FLASH_KEY) === "off" ? "off" : "on";
  }

  function apply(announce) {
    var choice = themeChoice();
    var theme = choice === "auto" ? (media && media.matches ? "dark" : "light") : choice;
    var changed = root.getAttribute("data-theme") !== theme;
    root.setAttribute("data-theme-choice", choice);
    root.setAttribute("data-theme", theme);
    root.setAttribute("data-flash", flashChoice());
    if (changed && announce) document.dispatchEvent(new Event("livefolio:themechange"));
  }

  apply(false);
  if (media) {
    var onChange = function () {
      apply(true);
    };
    if (media.addEventListener) media.addEventListener("change", onChange);
    else if (media.addListener) media.addListener(onChange);
  }
  // Another tab changed a setting: follow it.
  window.addEventListener("storage", function (event) {
    if (event.key === THEME_KEY || event.key === FLASH_KEY || event.key === null) apply(true);
  });

  window.livefolioPrefs = {
    THEMES: THEMES,
    themeChoice: themeChoice,
    flashChoice: flashChoice,
    /** "auto" | "light" | "dark": remembered, and applied at once. */
    setTheme: function (choice) {
      if (THEMES.indexOf(choice) < 0) throw new Error("livefolioPrefs.setTheme: not a theme: " + choice);
      write(THEME_KEY, choice);
      apply(true);
    },
    /** "on" | "off". */
    setFlash: function (value) {
      if (value !== "on" && value !== "off") throw new Error("livefolioPrefs.setFlash: not on or off: " + value);
      write(FLASH_KEY, value);
      apply(true);
    },
    /** Whether changed values should flash now (the setting, and the OS's reduced-motion wish). */
    flashEnabled: function () {
      if (root.getAttribute("data-flash") === "off") return false;
      return !(lessMotion && lessMotion.matches);
    },
  };
})();
