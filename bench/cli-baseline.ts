// The baseline of the CLI benchmark: the least a Node script can do to make
// one SDK call. argv: endpoint, operation (GetMicrovm | GetMicrovmImage),
// identifier; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
import { GetMicrovmCommand, GetMicrovmImageCommand, LambdaMicrovmsClient } from "@aws-sdk/client-lambda-microvms";

const [endpoint, operation, id] = process.argv.slice(2);
const client = new LambdaMicrovmsClient({ endpoint, region: "us-east-1" });
const command = operation === "GetMicrovm" ? new GetMicrovmCommand({ microvmIdentifier: id! }) : new GetMicrovmImageCommand({ imageIdentifier: id! });
try {
  process.stdout.write(`${JSON.stringify(await client.send(command as GetMicrovmCommand))}\n`);
} catch (err) {
  process.stderr.write(`${(err as Error).name}: ${(err as Error).message}\n`);
  process.exitCode = 254;
} finally {
  client.destroy();
}
