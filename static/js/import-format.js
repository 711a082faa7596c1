// The import wizard's format step (templates/portfolio/import_format.html).
// Shows the column mapping only while "Map the columns myself" is chosen.
// Without this script the form still works: the mapping is always shown and used only for that choice.

const form = document.querySelector('[data-testid="import-format"]');
const mapping = document.querySelector('[data-testid="import-mapping"]');

if (form && mapping) {
  const show = () => {
    const chosen = form.querySelector('input[name="format"]:checked');
    mapping.hidden = !chosen || chosen.value !== "generic";
  };
  form.addEventListener("change", (event) => {
    if (event.target.name === "format") show();
  });
  show();
}
