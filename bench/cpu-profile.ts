// Loaded with `node --import` into a process under a benchmark (Node 20 refuses
// --cpu-prof in NODE_OPTIONS): SIGUSR2 starts the CPU profiler, the next
// SIGUSR2 stops it and writes the profile (.cpuprofile, for Chrome DevTools or
// speedscope) into $LMVM_CPU_PROFILE_DIR, so that a profile covers the load
// alone. The inspector session runs on the process's own thread.

import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { join } from "node:path";

const dir = process.env.LMVM_CPU_PROFILE_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 200 });
  let on = false;
  let n = 0;
  process.on("SIGUSR2", () => {
    if (!on) {
      session.post("Profiler.start");
      on = true;
      return;
    }
    on = false;
    session.post("Profiler.stop", (err, result) => {
      if (!err) writeFileSync(join(dir, `lmvm-${process.pid}-${++n}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
