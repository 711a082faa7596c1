// The record / edit transaction form (templates/portfolio/transaction_form.html).
// Shows the inputs the chosen kind uses (the server ignores the others), names the quantity
// for that kind, and fills an instrument's currency and last price when one is picked.
// Without this script the form still works: every input is there and the server fills defaults.

const form = document.getElementById("entry-form");
const configNode = document.getElementById("entry-config");

if (form && configNode) {
  const config = JSON.parse(configNode.textContent);
  const kind = form.elements.namedItem("kind");
  const instrument = form.elements.namedItem("instrument");
  const price = form.elements.namedItem("price");
  const currency = form.elements.namedItem("currency");
  const quantityLabel = form.querySelector("[data-quantity-label]");
  const switchable = new Set(Object.values(config.fieldsByKind).flat());
  // A price the script put there may be replaced when the instrument changes; one the user typed is kept.
  let priceFilled = false;

  const showKind = () => {
    const used = new Set(config.fieldsByKind[kind.value] || []);
    for (const wrapper of form.querySelectorAll("[data-field]")) {
      const name = wrapper.dataset.field;
      if (switchable.has(name)) wrapper.hidden = !used.has(name);
    }
    if (quantityLabel) quantityLabel.textContent = config.quantityLabels[kind.value] || "Quantity";
  };

  const fillFromInstrument = ({ force }) => {
    const info = config.instruments[instrument.value];
    currency.placeholder = info ? info.currency : config.baseCurrency;
    if (!info) return;
    if (force) currency.value = "";  // empty means the instrument's own currency, which the placeholder shows
    if (info.price && (price.value === "" || priceFilled) && (config.fillPrice || force)) {
      price.value = info.price;
      priceFilled = true;
    }
  };

  kind.addEventListener("change", showKind);
  instrument.addEventListener("change", () => fillFromInstrument({ force: true }));
  price.addEventListener("input", () => {
    priceFilled = false;
  });
  showKind();
  fillFromInstrument({ force: false });
}
