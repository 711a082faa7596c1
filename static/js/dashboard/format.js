// Money, quantities, percentages, clock times and labels as the dashboard shows them,
// from the decimal strings the server sends. instrument.js formats with these too.

const formatterCache = new Map();

function cachedFormatter(key, make) {
  let fmt = formatterCache.get(key);
  if (fmt === undefined) {
    try {
      fmt = make();
    } catch (err) {
      fmt = null; // e.g. a currency code Intl rejects; callers fall back.
    }
    formatterCache.set(key, fmt);
  }
  return fmt;
}

export function isMissing(value) {
  return value === null || value === undefined || value === "";
}

/** Digits after the decimal point in a decimal string ("190.120" → 3). */
function decimalsOf(value) {
  const match = /\.(\d+)/.exec(String(value));
  return match ? match[1].length : 0;
}

function currencyDigits(currency) {
  const fmt = cachedFormatter(`cur:${currency}`, () => new Intl.NumberFormat(undefined, { style: "currency", currency }));
  return fmt ? fmt.resolvedOptions().maximumFractionDigits : 2;
}

// Intl formats decimal strings exactly where supported; elsewhere they go through Number.
function fmtInput(value) {
  return typeof value === "string" ? value : Number(value);
}

/**
 * Money in `currency`. With `keepPrecision`, shows at least as many decimals as
 * the server sent (prices of cheap coins need them), else the currency's usual digits.
 * `precisionOf` takes the decimals from another value instead (an average cost
 * shown as precisely as the instrument's price, not to ten places).
 */
export function formatMoney(value, currency, { keepPrecision = false, signed = false, precisionOf = null, digits: fixed = null } = {}) {
  if (isMissing(value)) return "—";
  const std = currencyDigits(currency);
  const source = isMissing(precisionOf) ? value : precisionOf;
  const digits = fixed !== null ? fixed : keepPrecision ? Math.min(20, Math.max(std, decimalsOf(source))) : std;
  const signDisplay = signed ? "exceptZero" : "auto";
  const fmt = cachedFormatter(`money:${currency}:${digits}:${signDisplay}`, () =>
    new Intl.NumberFormat(undefined, {
      style: "currency",
      currency,
      minimumFractionDigits: digits,
      maximumFractionDigits: digits,
      signDisplay,
    }),
  );
  if (fmt) return fmt.format(fmtInput(value));
  // Unknown or non-ISO code (e.g. "USDT"): a plain number and the code.
  const plain = cachedFormatter(`plain:${digits}:${signDisplay}`, () =>
    new Intl.NumberFormat(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits, signDisplay }),
  );
  return `${plain.format(fmtInput(value))} ${currency || ""}`.trim();
}

/** A y-axis label: whole units unless the tick step needs decimals. */
export function formatAxisMoney(value, currency, step) {
  const digits = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
  return formatMoney(value, currency, { digits });
}

export function formatQuantity(value) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter("qty", () => new Intl.NumberFormat(undefined, { maximumFractionDigits: 8 }));
  return fmt.format(fmtInput(value));
}

export function formatPercent(value, { signed = true } = {}) {
  if (isMissing(value)) return "—";
  const fmt = cachedFormatter(`pct:${signed}`, () =>
    new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: signed ? "exceptZero" : "auto" }),
  );
  return `${fmt.format(fmtInput(value))} %`;
}

export function formatClock(ts, { seconds = true } = {}) {
  const fmt = cachedFormatter(`clock:${seconds}`, () =>
    new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, hourCycle: "h23" }),
  );
  return fmt.format(new Date(ts));
}

export function formatAge(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

/** Exact sum of decimal strings ("33.10" + "1.20" → "34.30"); null if any is missing. */
export function addDecimals(...values) {
  if (values.some(isMissing)) return null;
  const scale = Math.max(...values.map(decimalsOf));
  let total = 0n;
  for (const value of values) {
    const [int, frac = ""] = String(value).replace(/^([+-]?)/, "").split(".");
    const negative = String(value).trim().startsWith("-");
    const units = BigInt(`${int || "0"}${frac.padEnd(scale, "0")}`);
    total += negative ? -units : units;
  }
  const negative = total < 0n;
  const digits = (negative ? -total : total).toString().padStart(scale + 1, "0");
  const whole = digits.slice(0, digits.length - scale);
  const frac = scale ? `.${digits.slice(digits.length - scale)}` : "";
  return `${negative ? "-" : ""}${whole}${frac}`;
}

/** -1, 0 or 1 for a decimal string; null when there is no value. */
export function signOf(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  if (Number.isNaN(n)) return null;
  return n > 0 ? 1 : n < 0 ? -1 : 0;
}

export function toNumber(value) {
  if (isMissing(value)) return null;
  const n = Number(value);
  return Number.isFinite(n) ? n : null;
}

const ASSET_CLASS_LABELS = { equity: "Equity", etf: "ETF", crypto: "Crypto", fx: "FX", bond: "Bond", fund: "Fund", cash: "Cash" };

export function assetClassLabel(key) {
  if (isMissing(key)) return "";
  return ASSET_CLASS_LABELS[key] || String(key).replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

/** "US Dollar" for "USD", where the browser knows it. */
export function currencyName(code) {
  if (isMissing(code)) return null;
  const names = cachedFormatter("currency-names", () => new Intl.DisplayNames(undefined, { type: "currency" }));
  try {
    const name = names ? names.of(code) : null;
    return name && name !== code ? name : null;
  } catch (err) {
    return null; // not a well-formed code
  }
}
