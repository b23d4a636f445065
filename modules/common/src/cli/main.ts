process.stderr.write('ota: no commands yet\n');
process.exitCode = 2;
